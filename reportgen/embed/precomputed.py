"""Embeddings given as input (vectors, a projector folder): no model, no forward pass.

A memory-mapped ``.npy`` stays memory-mapped (a selection of it goes to a temporary memory map);
thumbnails of a large input are made on demand, only for the samples the report shows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..datasets import Dataset
from ..images import LazyThumbnails, image_hash, make_thumbnail
from ..results import Embeddings, ModelInfo, ModelRun
from ..store.files import content_key
from ..streaming import select_rows

#: Above this many samples, thumbnails of precomputed inputs are made on demand (only those shown).
LAZY_THUMBNAILS_ABOVE = 50_000


def precomputed_run(ds: Dataset, indices: np.ndarray, thumbnail_px: int, scratch: Path) -> ModelRun:
    """The input's vectors of the selected rows as a model run (``origin: input``)."""
    idx = indices
    t = thumbnail_px
    thumbs: np.ndarray | LazyThumbnails
    if len(idx) > LAZY_THUMBNAILS_ABOVE:
        thumbs = LazyThumbnails(ds.read, idx, t, ds.array)
    else:
        thumbs = np.stack([make_thumbnail(ds.read(int(i)), t) for i in idx])
    layers = {name: select_rows(v, idx, scratch) for name, v in (ds.vectors or {}).items()}
    key = content_key({"input": ds.fingerprint, "selection": hashlib.sha256(idx.tobytes()).hexdigest(), "thumb": t})
    info = ModelInfo(
        name="embeddings",
        arch="precomputed",
        source=f"input file {ds.source}",
        weights_sha256=hashlib.sha256(ds.fingerprint.encode()).hexdigest(),
        preprocess=None,
        device="none (embeddings given as input)",
    )
    hashes = None
    if ds.has_images:  # exact duplicates among the given images
        hashes = np.frombuffer(b"".join(image_hash(ds.read(int(i))) for i in idx), np.uint8).reshape(len(idx), 16)
    emb = Embeddings(
        key=key,
        origin="input",
        path=None,
        ids=tuple(ds.ids[int(i)] for i in idx),
        indices=idx,
        labels=ds.labels[idx],
        layers=layers,
        reshapes={k: "given" for k in layers},
        thumbnails=thumbs,  # type: ignore[arg-type]
        bad=(),
        hashes=hashes,
    )
    return ModelRun(info, emb)
