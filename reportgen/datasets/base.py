"""The dataset-kind registry, the ``Dataset`` every kind returns, and the helpers kinds share.

A dataset kind is one file: a parameter model (a ``DatasetParams`` subclass with a ``kind``
literal) and a ``load(params) -> Dataset`` function, added with ``register_dataset_kind``. The
spec's ``dataset:`` entries are validated against the registered models. Images are read lazily,
one sample at a time (``Dataset.read``), so a 60,000-image folder is never held decoded in memory;
every reader returns RGB ``uint8`` (H, W, 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..images import read_image_file, to_rgb_uint8
from ..params import Params
from ..registry import Registry


class DatasetParams(Params):
    """Options every dataset kind has; ``kind`` names it (its registry key)."""

    kind: str
    limit: int | None = Field(None, gt=0, description="Use at most this many samples.")
    sample: Literal["stratified", "first", "random"] = Field(
        "stratified", description="How `limit` picks samples (under the spec's seed)."
    )
    on_bad_image: Literal["skip", "fail"] = Field(
        "skip", description="A corrupt or unreadable image is skipped (and listed) or fails the build."
    )
    name: str | None = Field(None, description="Display name of the dataset.")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labels, names and ids in memory; pixels read on demand with ``read(i)``.

    ``vectors`` holds precomputed embeddings (a dataset of kind ``embeddings``): then no model runs.
    ``array`` is the whole uint8 image array when the kind keeps one in memory (IDX, npz, digits):
    extraction can then hand batches of raw pixels to the device without decoding one by one.
    """

    name: str
    kind: str
    class_names: tuple[str, ...]
    labels: np.ndarray  # int64 (N,), values in [0, len(class_names))
    ids: tuple[str, ...]
    fingerprint: str
    reader: Callable[[int], np.ndarray] = field(repr=False)
    metadata: Mapping[str, list] = field(default_factory=dict, repr=False)
    vectors: Mapping[str, np.ndarray] | None = field(default=None, repr=False)
    source: str = ""
    has_images: bool = True
    paths: tuple[Path, ...] | None = field(default=None, repr=False)  # image files, when the kind reads files
    array: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) image of sample ``index``; raises ``images.BadImage``."""
        return self.reader(index)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))


@dataclass(frozen=True)
class DatasetKind:
    """A registered kind: its parameter model and the loader that takes them."""

    params: type[DatasetParams]
    load: Callable[[Any], Dataset]  # called with an instance of ``params``
    precomputed: bool = False  # holds embeddings: no model runs


DATASET_KINDS: Registry[DatasetKind] = Registry("dataset kind")
P = TypeVar("P", bound=DatasetParams)


def register_dataset_kind(
    params: type[P],
    load: Callable[[P], Dataset],
    *,
    precomputed: bool = False,
    replace: bool = False,
) -> None:
    """Add a dataset kind: its parameter model (a ``kind`` literal with a default) and its loader."""
    kind = params.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{params.__name__}.kind must be a Literal with a default (the kind's name)")
    current = DATASET_KINDS.get(kind)
    DATASET_KINDS.register(
        kind,
        DatasetKind(params, load, precomputed),
        replace=replace or (current is not None and current.params is params),
    )


def unregister_dataset_kind(kind: str) -> None:
    DATASET_KINDS.unregister(kind)


def get_kind(kind: str) -> DatasetKind:
    return DATASET_KINDS.lookup(kind)


def is_precomputed(params: DatasetParams) -> bool:
    return get_kind(params.kind).precomputed


# ----------------------------------------------------------------------------- helpers for kinds


def hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.data.cast("B"))
    return h.hexdigest()


def label_codes(raw: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Text labels -> integer codes and class names; numbers sort as numbers ("2" before "10")."""
    values = sorted(
        set(raw), key=lambda v: (0, float(v), "") if v.replace(".", "", 1).lstrip("-").isdigit() else (1, 0, v)
    )
    lookup = {v: i for i, v in enumerate(values)}
    return np.asarray([lookup[v] for v in raw], np.int64), tuple(values)


def array_dataset(
    name: str, kind: str, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None, id_prefix: str
) -> Dataset:
    """A dataset held as one (N,H,W[,C]) array in memory (IDX, npz, digits)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must be a 1-D array, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels; the arrays must have the same length")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DataError(f"{name}: images must be (N,H,W) or (N,H,W,C) with C in 1/3/4, got shape {images.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            uniq, labels = np.unique(labels.astype(str), return_inverse=True)
            class_names = class_names or [str(u) for u in uniq]
    labels = labels.astype(np.int64)
    if class_names is not None:
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(
                f"{name}: label {int(labels.max() if labels.max() >= len(class_names) else labels.min())} is out of "
                "range "
                f"for {len(class_names)} class_names; labels must be 0..{len(class_names) - 1}"
            )
        names = tuple(str(c) for c in class_names)
    else:
        uniq, labels = np.unique(labels, return_inverse=True)
        names = tuple(str(u) for u in uniq)
        labels = labels.astype(np.int64)
    fingerprint = hash_arrays(images, labels)

    def reader(i: int) -> np.ndarray:
        return to_rgb_uint8(images[i])

    ids = tuple(f"{id_prefix}{i}" for i in range(len(labels)))
    return Dataset(
        name=name,
        kind=kind,
        class_names=names,
        labels=labels,
        ids=ids,
        fingerprint=fingerprint,
        reader=reader,
        array=images if images.dtype == np.uint8 else None,
    )


def file_fingerprint(paths: Sequence[Path], labels: np.ndarray, root: Path) -> str:
    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        try:
            st = p.stat()
            h.update(
                f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode(
                    "utf-8", "surrogateescape"
                )
            )
        except OSError:
            h.update(f"{p}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def display_id(rel: str) -> str:
    """File names in non-UTF-8 bytes become readable ids (undecodable bytes shown as U+FFFD)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def path_dataset(
    name: str,
    kind: str,
    root: Path,
    paths: list[Path],
    labels: np.ndarray,
    class_names: tuple[str, ...],
    metadata: dict[str, list] | None = None,
) -> Dataset:
    """A dataset of image files, decoded on demand."""
    ids = tuple(display_id(p.relative_to(root).as_posix()) for p in paths)
    frozen_paths = tuple(paths)

    def reader(i: int) -> np.ndarray:
        return read_image_file(frozen_paths[i])

    return Dataset(
        name=name,
        kind=kind,
        class_names=class_names,
        labels=labels,
        ids=ids,
        fingerprint=file_fingerprint(paths, labels, root),
        reader=reader,
        metadata=metadata or {},
        paths=frozen_paths,
    )
