"""Shards -> one store entry: the one assembly every engine ends with.

An engine produces a job's shards (in this process, or durable in the store from Ray workers);
``assemble`` streams them, one in memory at a time, into the entry under the embeddings' key,
whole or not at all, with a manifest that says what made them. ``describe`` writes the part of the
manifest about the model, wherever it ran; ``model_info`` reads it back for the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError, ReportgenError
from ..images import Preprocess
from ..models import LoadedModel
from ..options import ModelSpec
from ..results import Embeddings, ModelInfo, ModelRun
from ..store.embeddings import EmbeddingStore
from .extractor import Extractor, Shard
from .identity import EmbedRequest
from .layers import ResolvedLayer


def describe(
    loaded: LoadedModel, layers: list[ResolvedLayer], extractor: Extractor, request: EmbedRequest
) -> dict[str, Any]:
    """The manifest's account of the model that made a job's shards (its weights, preprocessing, how
    images were fed, a reduced precision's agreement with fp32, where each layer sits)."""
    info = loaded.info
    return {
        "model": {"name": info.name, "arch": info.arch, "source": info.source, "weights_sha256": info.weights_sha256},
        "preprocess": loaded.preprocess.as_dict(),
        "feeding": extractor.feeding(request.ds).as_dict(),
        "agreement": dict(extractor.agreement),
        "layer_index": {l.name: l.index for l in layers},
        "device": info.device,
    }


@dataclass
class ShardRun:
    """A job's shards as an engine delivers them: the key they share, the shards in order (made as
    they are read, or read back from the store), the model's account (``about``, asked for once
    every shard is through) and what to do once they are assembled."""

    key: str
    shards: Iterable[Shard]
    about: Callable[[], dict[str, Any]]
    forward_calls: Callable[[], int]
    info: ModelInfo | None = None  # the model this process loaded (None: it ran elsewhere)
    engine: Mapping[str, Any] = field(default_factory=dict)  # for the manifest: which engine, workers, nodes
    finish: Callable[[], None] = lambda: None


def assemble(store: EmbeddingStore, run: ShardRun, request: EmbedRequest) -> Embeddings:
    """Stream ``run``'s shards into the store entry ``run.key``; an empty or failed job leaves none."""
    ds = request.ds
    writer = store.writer(run.key, request.thumbnail_px)
    try:
        for shard in run.shards:
            writer.add(shard, ds.labels[shard.indices])
            del shard  # one shard in memory at a time
        if writer.count == 0:
            first = writer.bad[0][1] if writer.bad else "no reason given"
            raise DataError(
                f"dataset: none of the {len(request.indices)} selected images could be read (first: {first})"
            )
        ids = [ds.ids[int(i)] for i in np.concatenate(writer.indices)]
        bad = [(ds.ids[i], r) for i, r in writer.bad]
        about = run.about()
        manifest = {
            **about,
            "model": {**about["model"], "name": request.model.name},
            "dataset": {
                "name": ds.name,
                "kind": ds.kind,
                "fingerprint": ds.fingerprint,
                "class_names": list(ds.class_names),
            },
            "thumbnail_px": request.thumbnail_px,
            **({"engine": dict(run.engine)} if run.engine else {}),
        }
        writer.commit(ids, bad, manifest)
    except BaseException:
        writer.abort()
        raise
    stored = store.load(run.key, verify=False, origin="computed")
    if stored is None:
        raise ReportgenError(
            f"cache: entry {run.key} vanished right after it was written; is another process clearing {store.dir}?"
        )
    run.finish()
    return dataclasses.replace(stored, forward_calls=run.forward_calls())


def model_info(mspec: ModelSpec, manifest: Mapping[str, Any], loaded: ModelInfo | None = None) -> ModelInfo:
    """What the report says about a model: the one this process loaded (``loaded``), or the one the
    manifest describes (embeddings from the cache, or computed by Ray workers), with how its
    images were fed."""
    if loaded is None:
        m = manifest["model"]
        engine = manifest.get("engine") or {}
        nodes = f" on {engine['nodes']} node(s)" if engine.get("nodes") else ""
        device = (
            f"Ray: {engine.get('workers', '?')} worker(s){nodes}, {engine.get('device', 'cpu')}"
            if engine.get("name") == "ray"
            else "not loaded (embeddings from the cache)"
        )
        loaded = ModelInfo(
            name=mspec.name,
            arch=m["arch"],
            source=m["source"],
            weights_sha256=m["weights_sha256"],
            preprocess=Preprocess.from_dict(manifest["preprocess"]),
            device=device,
        )
    feeding = manifest.get("feeding") or {}
    return dataclasses.replace(
        loaded,
        precision=feeding.get("precision", loaded.precision),
        feeding={k: v for k, v in feeding.items() if k != "precision"},
        agreement=manifest.get("agreement") or {},
    )


def as_run(mspec: ModelSpec, emb: Embeddings, loaded: ModelInfo | None = None) -> ModelRun:
    return ModelRun(model_info(mspec, emb.manifest, loaded), emb)
