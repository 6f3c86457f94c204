"""Precomputed embeddings (word, text, audio or image vectors): no model runs.

Two kinds: ``embeddings`` (a .npy / .npz / .tsv of vectors, a metadata TSV, optional images or a
sprite) and ``tensorboard_projector`` (a projector folder, e.g. written by
``SummaryWriter.add_embedding``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..images import IMAGE_EXTENSIONS, BadImage, make_thumbnail, read_image_file, to_rgb_uint8
from ..projector import parse_config, read_metadata, read_sprite, read_tensor, read_vectors_tsv
from .base import Dataset, DatasetParams, ResolvedPath, hash_arrays, label_codes


class EmbeddingsDataset(DatasetParams):
    """Precomputed vectors (word, text, audio or image embeddings): no model runs."""

    kind: Literal["embeddings"] = "embeddings"
    vectors: ResolvedPath = Field(description=".npy (N, d), .npz (one array per layer) or .tsv")
    metadata: ResolvedPath | None = Field(None, description="TSV, TensorBoard's rules: one column = labels, no header; several = header row.")
    label_column: str = "label"
    images: ResolvedPath | None = Field(None, description="A folder of images (sorted names, one per row) or a sprite image.")
    sprite_dim: int | None = Field(None, gt=0, description="Side of one sprite tile in pixels (when images is a sprite).")


class ProjectorDataset(DatasetParams):
    """A TensorBoard projector folder (projector_config.pbtxt), e.g. written by SummaryWriter.add_embedding."""

    kind: Literal["tensorboard_projector"] = "tensorboard_projector"
    path: ResolvedPath
    tensor: str | None = Field(None, description="tensor_name to read (default: the first entry).")
    label_column: str = "label"


def _labels_from_metadata(meta: dict[str, list[str]], column: str, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if column not in meta:
        raise DataError(f"dataset.label_column: no column {column!r} in {where} (columns: {', '.join(meta)})")
    return label_codes(meta[column])


def _precomputed(name: str, kind: str, vectors: dict[str, np.ndarray], meta: dict[str, list] | None, label_column: str,
                 thumbs: np.ndarray | None, source: str, where: str) -> Dataset:
    n = len(next(iter(vectors.values())))
    for k, v in vectors.items():
        if v.ndim != 2 or len(v) != n:
            raise DataError(f"dataset: vectors {k!r} have shape {v.shape}; every array must be (N={n}, d)")
    if meta is None:
        raise DataError(f"dataset.metadata: precomputed embeddings need labels; give a metadata TSV with a {label_column!r} column")
    labels, names = _labels_from_metadata(meta, label_column, where)
    if len(labels) != n:
        raise DataError(f"dataset: {len(labels)} metadata rows for {n} vectors")
    if thumbs is not None and len(thumbs) != n:
        raise DataError(f"dataset.images: {len(thumbs)} images for {n} vectors")
    placeholder = np.full((8, 8, 3), 235, np.uint8)
    frozen = thumbs

    def reader(i: int) -> np.ndarray:
        return placeholder if frozen is None else to_rgb_uint8(frozen[i])

    fp = hash_arrays(*vectors.values(), labels)
    others = {k: v for k, v in meta.items() if k != label_column}
    return Dataset(name=name, kind=kind, class_names=names, labels=labels, ids=tuple(f"{name}-{i}" for i in range(n)), fingerprint=fp,
                   reader=reader, metadata=others, vectors={k: np.asarray(v, np.float32) for k, v in vectors.items()}, source=source,
                   has_images=thumbs is not None)


def load_embeddings(spec: EmbeddingsDataset) -> Dataset:
    p = spec.vectors
    if not p.exists():
        raise DataError(f"dataset.vectors: file not found: {p}")
    try:
        if p.suffix == ".npy":
            vectors = {"embedding": np.load(p, allow_pickle=False)}
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                vectors = {k: z[k] for k in z.files}
        elif p.suffix in (".tsv", ".txt"):
            vectors = {"embedding": read_vectors_tsv(p)}
        else:
            raise DataError(f"dataset.vectors: {p.name}: use .npy, .npz or .tsv")
    except (ValueError, OSError) as exc:
        raise DataError(f"dataset.vectors: cannot read {p} ({str(exc)[:100]})") from None
    n = len(next(iter(vectors.values())))
    meta = read_metadata(spec.metadata, n) if spec.metadata else None
    thumbs = None
    if spec.images is not None:
        if spec.images.is_dir():
            files = sorted(f for f in spec.images.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if len(files) != n:
                raise DataError(f"dataset.images: {len(files)} images in {spec.images} for {n} vectors (matched by sorted name)")
            try:
                thumbs = np.stack([make_thumbnail(read_image_file(f), 32) for f in files])
            except BadImage as exc:
                raise DataError(f"dataset.images: {exc}") from None
        else:
            if not spec.sprite_dim:
                raise DataError("dataset.sprite_dim: a sprite image needs the side of one tile in pixels")
            thumbs = read_sprite(spec.images, (spec.sprite_dim, spec.sprite_dim), n)
    return _precomputed(spec.name or p.stem, "embeddings", vectors, meta, spec.label_column, thumbs, str(p), str(spec.metadata))


def load_projector(spec: ProjectorDataset) -> Dataset:
    cfg = spec.path / "projector_config.pbtxt" if spec.path.is_dir() else spec.path
    if not cfg.exists():
        raise DataError(f"dataset.path: no projector_config.pbtxt in {spec.path}")
    entries = parse_config(cfg)
    if spec.tensor:
        chosen = [e for e in entries if e.tensor_name == spec.tensor]
        if not chosen:
            raise DataError(f"dataset.tensor: no tensor {spec.tensor!r} in {cfg} (tensors: {', '.join(e.tensor_name for e in entries)})")
        entry = chosen[0]
    else:
        entry = entries[0]
    x = read_tensor(entry)
    same = [e for e in entries if e.metadata_path == entry.metadata_path and e is not entry and not spec.tensor]
    vectors = {entry.tensor_name: x}
    for e in same:  # entries sharing metadata (e.g. one per layer, as export-projector writes)
        y = read_tensor(e)
        if len(y) == len(x):
            vectors[e.tensor_name] = y
    meta = read_metadata(entry.metadata_path, len(x)) if entry.metadata_path else None
    thumbs = read_sprite(entry.sprite_path, entry.sprite_dim, len(x)) if entry.sprite_path and entry.sprite_dim else None
    return _precomputed(spec.name or cfg.parent.name, "tensorboard_projector", vectors, meta, spec.label_column, thumbs, str(cfg), str(entry.metadata_path))
