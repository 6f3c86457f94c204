"""Precomputed embeddings (word, text, audio or image vectors): no model runs.

Two kinds: ``embeddings`` (a .npy / .npz / .tsv of vectors, a metadata TSV, optional images or a
sprite) and ``tensorboard_projector`` (a projector folder, e.g. written by
``SummaryWriter.add_embedding``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..images import IMAGE_EXTENSIONS, BadImage, make_thumbnail, read_image_file, to_rgb_uint8
from ..params import ResolvedPath
from ..projector import parse_config, read_metadata, read_sprite, read_tensor, read_vectors_tsv
from ..streaming import track
from .base import Dataset, DatasetParams, hash_arrays, label_codes


class EmbeddingsDataset(DatasetParams):
    """Precomputed vectors (word, text, audio or image embeddings): no model runs."""

    kind: Literal["embeddings"] = "embeddings"
    vectors: ResolvedPath = Field(description=".npy (N, d), .npz (one array per layer) or .tsv")
    metadata: ResolvedPath | None = Field(
        None, description="TSV, TensorBoard's rules: one column = labels, no header; several = header row."
    )
    label_column: str = "label"
    images: ResolvedPath | None = Field(
        None,
        description=(
            "A folder of images (sorted names, one per row), a sprite image, or a .npy of (N, H, W[, C]) uint8 images "
            "(read on demand)."
        ),
    )
    sprite_dim: int | None = Field(
        None, gt=0, description="Side of one sprite tile in pixels (when images is a sprite)."
    )
    memory_gb: float | None = Field(
        None,
        gt=0,
        description=(
            "Memory budget for inputs that cannot be streamed (.npz, .tsv); default: half the machine's memory. A .npy "
            "is memory-mapped and streamed."
        ),
    )


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


def _precomputed(
    name: str,
    kind: str,
    vectors: dict[str, np.ndarray],
    meta: dict[str, list] | None,
    label_column: str,
    thumbs: np.ndarray | None,
    source: str,
    where: str,
    images: np.ndarray | None = None,
) -> Dataset:
    n = len(next(iter(vectors.values())))
    for k, v in vectors.items():
        if v.ndim != 2 or len(v) != n:
            raise DataError(f"dataset: vectors {k!r} have shape {v.shape}; every array must be (N={n}, d)")
    if meta is None:
        raise DataError(
            f"dataset.metadata: precomputed embeddings need labels; give a metadata TSV with a {label_column!r} column"
        )
    labels, names = _labels_from_metadata(meta, label_column, where)
    if len(labels) != n:
        raise DataError(f"dataset: {len(labels)} metadata rows for {n} vectors")
    if thumbs is not None and len(thumbs) != n:
        raise DataError(f"dataset.images: {len(thumbs)} images for {n} vectors")
    placeholder = np.full((8, 8, 3), 235, np.uint8)
    pixels = images if images is not None else thumbs

    def reader(i: int) -> np.ndarray:
        return placeholder if pixels is None else to_rgb_uint8(pixels[i])

    fp = _fingerprint(vectors, labels)
    others = {k: v for k, v in meta.items() if k != label_column}
    # float32 arrays (memory-mapped .npy included) pass through uncopied
    vecs = {k: v if v.dtype == np.float32 else np.asarray(v, np.float32) for k, v in vectors.items()}
    return Dataset(
        name=name,
        kind=kind,
        class_names=names,
        labels=labels,
        ids=tuple(f"{name}-{i}" for i in range(n)),
        fingerprint=fp,
        reader=reader,
        metadata=others,
        vectors=vecs,
        source=source,
        has_images=pixels is not None,
        array=images,
    )


def _fingerprint(vectors: dict[str, np.ndarray], labels: np.ndarray) -> str:
    """Content hash of the vectors and labels, streamed (a 5 GB memory map is read in chunks)."""
    import hashlib

    from ..streaming import row_chunks

    h = hashlib.sha256()
    for name, v in vectors.items():
        h.update(str((name, v.dtype.str, v.shape)).encode())
        for _, c in row_chunks(v):
            h.update(np.ascontiguousarray(c).data.cast("B"))
    h.update(hash_arrays(labels).encode())
    return h.hexdigest()


def memory_budget(spec: EmbeddingsDataset) -> int:
    """Bytes an input that cannot be streamed may take in memory."""
    if spec.memory_gb is not None:
        return int(spec.memory_gb * 2**30)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _too_large(p: Path, what: str, nbytes: int, budget: int, fix: str) -> DataError:
    return DataError(
        f"dataset.vectors: {p.name} holds {nbytes / 2**30:.1f} GB of {what}, more than the {budget / 2**30:.1f} GB "
        "memory budget "
        f"(dataset.memory_gb), and cannot be read in parts; {fix}"
    )


def load_embeddings(spec: EmbeddingsDataset) -> Dataset:
    p = spec.vectors
    if not p.exists():
        raise DataError(f"dataset.vectors: file not found: {p}")
    budget = memory_budget(spec)
    try:
        if p.suffix == ".npy":  # memory-mapped: read in chunks by every stage, never whole
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            track(arr)
            if arr.dtype != np.float32 and arr.nbytes > budget:
                raise _too_large(
                    p,
                    f"{arr.dtype} vectors",
                    arr.nbytes,
                    budget,
                    "save them as float32 (x.astype('float32')) to stream them",
                )
            vectors = {"embedding": arr}
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                size = sum(z.zip.getinfo(f"{k}.npy").file_size for k in z.files)
                if size > budget:
                    raise _too_large(
                        p, "arrays", size, budget, "save each array as its own .npy (np.save) to stream it"
                    )
                vectors = {k: z[k] for k in z.files}
        elif p.suffix in (".tsv", ".txt"):
            estimate = p.stat().st_size // 3  # ~10 characters of text per float32 of 4 bytes
            if estimate > budget:
                raise _too_large(p, "vectors as text", estimate, budget, "convert it to a float32 .npy to stream it")
            vectors = {"embedding": read_vectors_tsv(p)}
        else:
            raise DataError(f"dataset.vectors: {p.name}: use .npy, .npz or .tsv")
    except DataError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"dataset.vectors: cannot read {p} ({str(exc)[:100]})") from None
    n = len(next(iter(vectors.values())))
    meta = read_metadata(spec.metadata, n) if spec.metadata else None
    thumbs = None
    if spec.images is not None and spec.images.suffix == ".npy":
        try:
            images = np.load(spec.images, mmap_mode="r", allow_pickle=False)
            track(images)
        except (ValueError, OSError) as exc:
            raise DataError(f"dataset.images: cannot read {spec.images} ({str(exc)[:100]})") from None
        if images.ndim not in (3, 4) or len(images) != n:
            raise DataError(
                f"dataset.images: {spec.images} holds an array of shape {images.shape}; expected ({n}, H, W[, C]) "
                "images, one per vector"
            )
        return _precomputed(
            spec.name or p.stem,
            "embeddings",
            vectors,
            meta,
            spec.label_column,
            None,
            str(p),
            str(spec.metadata),
            images=images,
        )
    if spec.images is not None:
        if spec.images.is_dir():
            files = sorted(f for f in spec.images.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if len(files) != n:
                raise DataError(
                    f"dataset.images: {len(files)} images in {spec.images} for {n} vectors (matched by sorted name)"
                )
            try:
                thumbs = np.stack([make_thumbnail(read_image_file(f), 32) for f in files])
            except BadImage as exc:
                raise DataError(f"dataset.images: {exc}") from None
        else:
            if not spec.sprite_dim:
                raise DataError("dataset.sprite_dim: a sprite image needs the side of one tile in pixels")
            thumbs = read_sprite(spec.images, (spec.sprite_dim, spec.sprite_dim), n)
    return _precomputed(
        spec.name or p.stem, "embeddings", vectors, meta, spec.label_column, thumbs, str(p), str(spec.metadata)
    )


def load_projector(spec: ProjectorDataset) -> Dataset:
    cfg = spec.path / "projector_config.pbtxt" if spec.path.is_dir() else spec.path
    if not cfg.exists():
        raise DataError(f"dataset.path: no projector_config.pbtxt in {spec.path}")
    entries = parse_config(cfg)
    if spec.tensor:
        chosen = [e for e in entries if e.tensor_name == spec.tensor]
        if not chosen:
            raise DataError(
                f"dataset.tensor: no tensor {spec.tensor!r} in {cfg} (tensors: "
                f"{', '.join(e.tensor_name for e in entries)})"
            )
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
    thumbs = (
        read_sprite(entry.sprite_path, entry.sprite_dim, len(x)) if entry.sprite_path and entry.sprite_dim else None
    )
    return _precomputed(
        spec.name or cfg.parent.name,
        "tensorboard_projector",
        vectors,
        meta,
        spec.label_column,
        thumbs,
        str(cfg),
        str(entry.metadata_path),
    )
