"""MNIST-format IDX files (gzipped or not), e.g. Debian's dataset-fashion-mnist; a file or a list
concatenated in order (train + test)."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..params import ResolvedPath
from .base import Dataset, DatasetParams, array_dataset


class IdxDataset(DatasetParams):
    """MNIST-format IDX files (gzipped or not), e.g. Debian's dataset-fashion-mnist."""

    kind: Literal["idx"] = "idx"
    images: ResolvedPath | list[ResolvedPath] = Field(
        description="An IDX file, or a list concatenated in order (train + test)."
    )
    labels: ResolvedPath | list[ResolvedPath] = Field(description="The labels file(s), one per images file.")
    class_names: list[str] | None = None


def _read_maybe_gzip(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"dataset.{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"dataset.{what}: {path} is a folder; give the IDX file") from None
    except OSError as exc:
        raise DataError(f"dataset.{what}: cannot read {path} ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"dataset.{what}: {path} is a damaged gzip file ({exc})") from None
    return raw


_IDX_TYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, *, source: str) -> np.ndarray:
    """Parse an IDX (MNIST format) buffer; errors say what is wrong with the file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(
            f"{source}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); expected MNIST-format data"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype: np.dtype[Any] = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise DataError(
            f"{source}: IDX file is truncated: header says {shape} but the data holds {len(raw) - header} of "
            f"{expected} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


def load(spec: IdxDataset) -> Dataset:
    image_files = spec.images if isinstance(spec.images, list) else [spec.images]
    label_files = spec.labels if isinstance(spec.labels, list) else [spec.labels]
    if not image_files or len(image_files) != len(label_files):
        raise DataError(
            f"dataset: {len(image_files)} images file(s) but {len(label_files)} labels file(s); give one labels "
            "file "
            "per images file"
        )
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    prefixes: list[str] = []
    for i, (ipath, lpath) in enumerate(zip(image_files, label_files)):
        where = f"[{i}]" if len(image_files) > 1 else ""
        images = parse_idx(_read_maybe_gzip(ipath, f"images{where}"), source=f"dataset.images{where}: {ipath}")
        labels = parse_idx(_read_maybe_gzip(lpath, f"labels{where}"), source=f"dataset.labels{where}: {lpath}")
        if images.ndim not in (3, 4):
            raise DataError(f"dataset.images{where}: {ipath} holds a {images.ndim}-D array; expected (N, H, W) images")
        if labels.ndim != 1:
            raise DataError(f"dataset.labels{where}: {lpath} holds a {labels.ndim}-D array; expected (N,) labels")
        if len(images) != len(labels):
            raise DataError(
                f"dataset: {ipath} has {len(images)} images but {lpath} has {len(labels)} labels; the files must "
                "pair up"
            )
        if parts and images.shape[1:] != parts[0][0].shape[1:]:
            raise DataError(
                f"dataset.images{where}: {ipath} holds {images.shape[1:]} images, {image_files[0]} holds "
                f"{parts[0][0].shape[1:]}; files must match"
            )
        parts.append((images, labels))
        prefixes.append(f"{ipath.stem}-")
    images, labels = (
        parts[0] if len(parts) == 1 else (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    )
    ds = array_dataset(
        spec.name or " + ".join(p.stem for p in image_files), "idx", images, labels, spec.class_names, ""
    )
    ids = tuple(
        f"{prefix}{i}" for prefix, (_, lab) in zip(prefixes, parts) for i in range(len(lab))
    )  # per file, so ids stay stable
    return dataclasses.replace(ds, ids=ids)
