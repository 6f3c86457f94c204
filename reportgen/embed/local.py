"""The local engine: shards run in this process, one after another, on its CPU or GPU.

A model is loaded once per build and reused for every dataset it embeds (the reference and each
compared one); the first shard decides the frozen graph and the feeding for all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from ..models import LoadedModel, load_model
from ..results import Embeddings
from ..store.embeddings import EmbeddingStore
from .assembly import ShardRun, describe
from .extractor import Extractor, Shard
from .identity import EmbedRequest, embedding_key
from .layers import ResolvedLayer, resolve_layers

#: Samples per shard: the unit of memory (one shard's embeddings are held at a time).
SHARD_SIZE = 8192


class LocalEngine:
    """Runs a job's shards in this process (``name``: what the manifest and the report say)."""

    name = "local"

    def __init__(self) -> None:
        self._models: dict[str, tuple[LoadedModel, list[ResolvedLayer]]] = {}

    def model(self, request: EmbedRequest) -> tuple[LoadedModel, list[ResolvedLayer]]:
        """The request's model and layers, loaded once per engine (every dataset goes through it)."""
        name = request.model.name
        if name not in self._models:
            loaded = load_model(request.model, seed=request.seed, module=request.module)
            self._models[name] = (loaded, resolve_layers(loaded.module, request.model.layers))
        return self._models[name]

    def run(
        self, request: EmbedRequest, store: EmbeddingStore, *, key: str | None, use_cache: bool, progress: bool
    ) -> ShardRun | Embeddings:
        """The job's shards, computed as they are read; or the stored embeddings, when the built
        model's key (all that could name a factory's weights) finds them."""
        loaded, layers = self.model(request)
        if key is None:
            key = embedding_key(request, loaded.info)
            assert key is not None
            if use_cache and (hit := store.load(key)) is not None:
                return hit
        m = request.model
        extractor = Extractor(
            loaded,
            layers,
            batch_size=m.batch_size,
            thumbnail_px=request.thumbnail_px,
            on_bad_image=request.on_bad_image,
            max_features=m.max_features,
            num_workers=m.num_workers,
            jit=m.jit,
            precision=m.precision,
            expected_samples=len(request.indices),
        )
        calls = [0]

        def shards() -> Iterator[Shard]:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(request.indices),
                desc=f"extract {m.name}",
                unit="img",
                disable=None if progress else True,
                leave=False,
                file=sys.stderr,
            )
            try:
                for start in range(0, len(request.indices), SHARD_SIZE):
                    part: np.ndarray = request.indices[start : start + SHARD_SIZE]
                    shard = extractor.run(request.ds, part, progress=bar.update)
                    calls[0] += shard.forward_calls
                    yield shard
                    del shard  # one shard in memory at a time: not this one while the next is made
            finally:
                bar.close()

        return ShardRun(
            key, shards(), lambda: describe(loaded, layers, extractor, request), lambda: calls[0], info=loaded.info
        )
