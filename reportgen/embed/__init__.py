"""Embed: models over datasets -> pooled layer embeddings in the store, on one engine or another.

    run = embed(request, engine_for(spec.execution), store, use_cache=True, progress=True)

One interface, several engines (``Engine``): the identity of a job (``identity``), its shards and
their assembly into a store entry (``assembly``) belong to the interface; an engine only decides
where the shards run - in this process (``local``) or on a Ray cluster (``ray``). Inside a shard:
layers and hooks (``layers``), how images reach the device (``feeding``), the forward pass
(``extractor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..options import ExecutionSpec
from ..results import Embeddings, ModelRun
from ..store.embeddings import EmbeddingStore
from .assembly import ShardRun, as_run, assemble
from .identity import EmbedRequest, embedding_key
from .local import LocalEngine

__all__ = ["Engine", "EmbedRequest", "LocalEngine", "embed", "engine_for", "embedding_key"]


class Engine(Protocol):
    """Where a job's shards run. ``run`` returns them (a ``ShardRun``) or, when the key it learns
    on the way finds them, the stored embeddings."""

    name: str

    def run(
        self, request: EmbedRequest, store: EmbeddingStore, *, key: str | None, use_cache: bool, progress: bool
    ) -> ShardRun | Embeddings: ...


def engine_for(execution: ExecutionSpec, *, on_shard: Callable[[dict[str, Any]], None] | None = None) -> Engine:
    """The engine ``execution.engine`` names (``on_shard``: called with each finished shard's record
    on Ray)."""
    if execution.engine == "ray":
        from .ray import RayEngine

        return RayEngine(execution, on_shard)
    return LocalEngine()


def embed(request: EmbedRequest, engine: Engine, store: EmbeddingStore, *, use_cache: bool, progress: bool) -> ModelRun:
    """One model's embeddings of one selection: from the store when its key finds them (the model
    is then not even built), else computed by ``engine`` and assembled into the store."""
    key = embedding_key(request)
    if use_cache and key is not None and (hit := store.load(key)) is not None:
        return as_run(request.model, hit)
    got = engine.run(request, store, key=key, use_cache=use_cache, progress=progress)
    if isinstance(got, Embeddings):
        return as_run(request.model, got)
    return as_run(request.model, assemble(store, got, request), got.info)
