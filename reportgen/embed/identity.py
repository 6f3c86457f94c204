"""The identity of one model's embeddings of one selection of a dataset: one request, one key
function and one list of the options that are not part of it - the same for every engine.

The key is known from the spec alone wherever the spec names the weights (a timm architecture
with packaged weights, a checkpoint file or a seeded random init; raw pixels): a rebuild then finds
its embeddings without building the model, and the Ray driver names its job without loading it.
Where only the built model knows its weights (a factory, hub weights that can change under one
name, a module object given to the Python API), the key needs the loaded model's ``ModelInfo``
(its state dict's SHA-256, architecture and preprocessing); the Ray workers compute it there, and
every shard of a job must agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import Dataset, DatasetParams
from ..errors import ReportgenError
from ..fingerprint import code_fingerprint
from ..options import ModelSpec
from ..results import ModelInfo
from ..store.files import content_key, file_sha256

#: Model options that never change the embeddings' values, so never part of their identity
#: (``checkpoint``: the file's content, its SHA-256, stands in for its path).
RUNTIME_OPTIONS = frozenset({"name", "device", "batch_size", "num_workers", "channels_last", "jit", "checkpoint"})

#: Code that shapes embeddings (with every reportgen module it imports): decoding, preprocessing,
#: feeding, pooling, model loading. A change there recomputes them.
EMBEDDING_CODE = ("reportgen.embed.extractor", "reportgen.models")


@dataclass(frozen=True, eq=False)
class EmbedRequest:
    """One model over one selection of one dataset: what an engine is asked to embed."""

    model: ModelSpec
    dataset: DatasetParams  # the spec of ``ds`` (what a Ray worker loads it from)
    ds: Dataset
    indices: np.ndarray  # the selected dataset indices, in order
    seed: int
    thumbnail_px: int
    module: Any = None  # a torch module given to the Python API (then the model is not built from the spec)

    @property
    def on_bad_image(self) -> str:
        return self.dataset.on_bad_image

    @property
    def selection(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.indices, np.int64).tobytes()).hexdigest()


def _spec_weights(request: EmbedRequest) -> str | None:
    """The weights' identity from the spec alone, or None when only the built model knows it."""
    m = request.model
    if request.module is not None or m.factory or m.pretrained:
        return None
    try:
        if m.pixels:
            return "none (raw pixels)"
        if m.checkpoint is not None:
            return f"checkpoint {file_sha256(Path(m.checkpoint))}"
        if m.weights:
            from ..models import PACKAGED_WEIGHTS

            pw = PACKAGED_WEIGHTS[m.weights]
            return None if pw.file is None else f"packaged {file_sha256(Path(pw.file()))}"
    except (ReportgenError, OSError):
        return None  # a missing file or package: loading the model reports it
    return f"random init, seed {request.seed}"


def _timm_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


def _parts(request: EmbedRequest) -> dict[str, Any]:
    """What every identity of a request holds: the model as the spec gives it (but for
    ``RUNTIME_OPTIONS``), the data, the selection, thumbnails, bad-image handling and the code."""
    return {
        "code": code_fingerprint(*EMBEDDING_CODE),
        "model": request.model.model_dump(mode="json", exclude=set(RUNTIME_OPTIONS)),
        "timm": _timm_version() if request.model.timm else None,
        "dataset": request.ds.fingerprint,
        "selection": request.selection,
        "thumbnail_px": request.thumbnail_px,
        "on_bad_image": request.on_bad_image,
    }


def embedding_key(request: EmbedRequest, model: ModelInfo | None = None) -> str | None:
    """The content key of the embeddings ``request`` asks for (``_parts`` and the weights): from the
    spec alone where it names the weights; else from ``model``, the built model's description;
    None when neither can tell yet."""
    weights = _spec_weights(request)
    built = None
    if weights is None:
        if model is None:
            return None
        weights = f"state dict {model.weights_sha256}"
        built = {"arch": model.arch, "preprocess": model.preprocess.as_dict() if model.preprocess else None}
    return content_key({**_parts(request), "weights": weights, "built": built})


def job_key(request: EmbedRequest) -> str:
    """The name of a distributed job's shards folder: the embeddings' key where the spec tells it,
    else the request itself (the workers then compute the key, and every shard must agree)."""
    weights = "known once built"
    checkpoint = str(request.model.checkpoint) if request.model.checkpoint else None
    return embedding_key(request) or content_key(
        {**_parts(request), "weights": weights, "checkpoint": checkpoint, "seed": request.seed}
    )
