"""Datasets: a ``DatasetSpec`` -> a ``Dataset`` (lazy images, labels, class names, ids, metadata).

Images are read lazily, one sample at a time (``Dataset.read``), so that a 60,000-image
folder is never held decoded in memory. Every reader returns RGB ``uint8`` (H, W, 3).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError
from .spec import CsvDataset, DigitsDataset, IdxDataset, ImageFolderDataset, NpzDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
#: Images larger than this many pixels are refused (decompression-bomb guard).
MAX_IMAGE_PIXELS = 150_000_000  # a 10,000 x 10,000 photo is fine; a 40,000 x 40,000 header is not


class BadImage(Exception):
    """One sample could not be read; the build skips or fails according to ``on_bad_image``."""


@dataclass(frozen=True)
class Dataset:
    """Labels, names and ids in memory; pixels read on demand with ``read(i)``."""

    name: str
    kind: str
    class_names: tuple[str, ...]
    labels: np.ndarray  # int64 (N,), values in [0, len(class_names))
    ids: tuple[str, ...]
    fingerprint: str
    reader: Callable[[int], np.ndarray] = field(repr=False)
    metadata: dict[str, list] = field(default_factory=dict, repr=False)
    vectors: dict[str, np.ndarray] | None = field(default=None, repr=False)  # precomputed embeddings per "layer"
    source: str = ""
    has_images: bool = True

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) image of sample ``index``; raises ``BadImage``."""
        return self.reader(index)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))


@dataclass(frozen=True)
class Selection:
    """Which samples of a dataset a build uses (indices into the dataset, sorted)."""

    indices: np.ndarray
    used_per_class: dict[str, int]
    total_per_class: dict[str, int]
    method: str


# ----------------------------------------------------------------------------- pixels


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any (H,W), (H,W,1), (H,W,3), (H,W,4) array of uint8/uint16/float -> RGB uint8."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32))
        hi = float(a.max()) if a.size else 1.0
        scale = 255.0 if hi <= 1.0 else (255.0 / hi if hi > 255 else 1.0)
        a = np.clip(a * scale, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise BadImage(f"unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = (a[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise BadImage(f"unsupported image shape {a.shape}")
    return np.ascontiguousarray(a)


def read_image_file(path: Path) -> np.ndarray:
    """Decode any PIL-readable file to RGB uint8; alpha composited on white; 16-bit scaled."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow warns above this and refuses above twice this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise BadImage(f"{im.width}x{im.height} pixels is over the {MAX_IMAGE_PIXELS:,}-pixel limit")
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    arr = np.asarray(im, dtype=np.float64)
                    hi = arr.max() if arr.size and arr.max() > 0 else 1.0
                    return to_rgb_uint8(np.clip(arr / (65535.0 if hi > 255 else 255.0), 0, 1).astype(np.float32))
                if im.mode == "F":
                    return to_rgb_uint8(np.asarray(im, dtype=np.float32))
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    return to_rgb_uint8(np.asarray(im.convert("RGBA")))
                return to_rgb_uint8(np.asarray(im.convert("RGB")))
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"refused as a decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError, EOFError) as exc:
        raise BadImage(f"cannot decode image ({type(exc).__name__}: {str(exc)[:120]})") from None


# ----------------------------------------------------------------------------- loaders


def _hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _array_dataset(name: str, kind: str, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None, id_prefix: str) -> Dataset:
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
                f"{name}: label {int(labels.max() if labels.max() >= len(class_names) else labels.min())} is out of range "
                f"for {len(class_names)} class_names; labels must be 0..{len(class_names) - 1}"
            )
        names = tuple(str(c) for c in class_names)
    else:
        uniq, labels = np.unique(labels, return_inverse=True)
        names = tuple(str(u) for u in uniq)
        labels = labels.astype(np.int64)
    fingerprint = _hash_arrays(images, labels)

    def reader(i: int) -> np.ndarray:
        return to_rgb_uint8(images[i])

    ids = tuple(f"{id_prefix}{i}" for i in range(len(labels)))
    return Dataset(name=name, kind=kind, class_names=names, labels=labels, ids=ids, fingerprint=fingerprint, reader=reader)


def _load_digits(spec: DigitsDataset) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return _array_dataset(spec.name or "digits", "digits", images, d.target, [str(i) for i in range(10)], "digits-")


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


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, *, source: str) -> np.ndarray:
    """Parse an IDX (MNIST format) buffer; errors say what is wrong with the file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{source}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); expected MNIST-format data")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise DataError(f"{source}: IDX file is truncated: header says {shape} but the data holds {len(raw) - header} of {expected} bytes")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


def _load_idx(spec: IdxDataset) -> Dataset:
    image_files = spec.images if isinstance(spec.images, list) else [spec.images]
    label_files = spec.labels if isinstance(spec.labels, list) else [spec.labels]
    if not image_files or len(image_files) != len(label_files):
        raise DataError(f"dataset: {len(image_files)} images file(s) but {len(label_files)} labels file(s); give one labels file per images file")
    parts, prefixes = [], []
    for i, (ipath, lpath) in enumerate(zip(image_files, label_files)):
        where = f"[{i}]" if len(image_files) > 1 else ""
        images = parse_idx(_read_maybe_gzip(ipath, f"images{where}"), source=f"dataset.images{where}: {ipath}")
        labels = parse_idx(_read_maybe_gzip(lpath, f"labels{where}"), source=f"dataset.labels{where}: {lpath}")
        if images.ndim not in (3, 4):
            raise DataError(f"dataset.images{where}: {ipath} holds a {images.ndim}-D array; expected (N, H, W) images")
        if labels.ndim != 1:
            raise DataError(f"dataset.labels{where}: {lpath} holds a {labels.ndim}-D array; expected (N,) labels")
        if len(images) != len(labels):
            raise DataError(f"dataset: {ipath} has {len(images)} images but {lpath} has {len(labels)} labels; the files must pair up")
        if parts and images.shape[1:] != parts[0][0].shape[1:]:
            raise DataError(f"dataset.images{where}: {ipath} holds {images.shape[1:]} images, {image_files[0]} holds {parts[0][0].shape[1:]}; files must match")
        parts.append((images, labels))
        prefixes.append(f"{ipath.stem}-")
    images, labels = (parts[0] if len(parts) == 1 else (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    ds = _array_dataset(spec.name or " + ".join(p.stem for p in image_files), "idx", images, labels, spec.class_names, "")
    ids = tuple(f"{prefix}{i}" for prefix, (_, lab) in zip(prefixes, parts) for i in range(len(lab)))  # per file, so ids stay stable
    return dataclasses.replace(ds, ids=ids)


def _load_npz(spec: NpzDataset) -> Dataset:
    try:
        with np.load(spec.path, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise DataError(f"dataset.path: {spec.path} has no array {missing[0]!r} (it has {sorted(z.files)}); save arrays 'images' and 'labels'")
            images, labels = z["images"], z["labels"]
    except FileNotFoundError:
        raise DataError(f"dataset.path: file not found: {spec.path}") from None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"dataset.path: {spec.path}: cannot read without pickle ({exc}); store plain numeric arrays") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"dataset.path: {spec.path} is not a readable .npz ({str(exc)[:100]})") from None
    return _array_dataset(spec.name or spec.path.stem, "npz", images, labels, spec.class_names, f"{spec.path.stem}-")


def _file_fingerprint(paths: Sequence[Path], labels: np.ndarray, root: Path) -> str:
    h = hashlib.sha256()
    for p, y in zip(paths, labels):
        try:
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{p}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _display_id(rel: str) -> str:
    """File names in non-UTF-8 bytes become readable ids (undecodable bytes shown as U+FFFD)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _path_dataset(name: str, kind: str, root: Path, paths: list[Path], labels: np.ndarray, class_names: tuple[str, ...], metadata: dict[str, list] | None = None) -> Dataset:
    ids = tuple(_display_id(p.relative_to(root).as_posix()) for p in paths)
    frozen_paths = tuple(paths)

    def reader(i: int) -> np.ndarray:
        return read_image_file(frozen_paths[i])

    return Dataset(
        name=name, kind=kind, class_names=class_names, labels=labels, ids=ids,
        fingerprint=_file_fingerprint(paths, labels, root), reader=reader, metadata=metadata or {},
    )


def _load_image_folder(spec: ImageFolderDataset) -> Dataset:
    root = spec.path
    if not root.exists():
        raise DataError(f"dataset.path: folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"dataset.path: {root} is not a folder; image_folder needs one sub-folder per class")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"dataset.path: {root} has no class sub-folders; put each class's images in root/<class>/")
    paths: list[Path] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root / cname, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    found.append(Path(dirpath) / fn)
        if not found:
            raise DataError(f"dataset.path: class folder {root / cname} has no images ({', '.join(IMAGE_EXTENSIONS[:5])} ...); add images or remove the folder")
        paths += found
        labels += [ci] * len(found)
    return _path_dataset(spec.name or root.name, "image_folder", root, paths, np.asarray(labels, dtype=np.int64), tuple(_display_id(c) for c in classes))


def _load_csv(spec: CsvDataset) -> Dataset:
    try:
        with open(spec.path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"dataset.path: CSV manifest not found: {spec.path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"dataset.path: cannot read CSV manifest {spec.path} ({exc})") from None
    if not rows:
        raise DataError(f"dataset.path: {spec.path} has no data rows")
    columns = list(rows[0].keys())
    for key, col in (("path_column", spec.path_column), ("label_column", spec.label_column)):
        if col not in columns:
            raise DataError(f"dataset.{key}: column {col!r} not in {spec.path} (columns: {', '.join(str(c) for c in columns)})")
    root = (spec.root or spec.path.parent).resolve()
    paths: list[Path] = []
    raw_labels: list[str] = []
    for n, row in enumerate(rows, start=2):
        rel = (row.get(spec.path_column) or "").strip()
        if not rel:
            raise DataError(f"dataset.path: {spec.path} line {n}: empty {spec.path_column!r}")
        p = (root / rel).resolve()
        if not p.is_relative_to(root):
            raise DataError(f"dataset.path: {spec.path} line {n}: path {rel!r} points outside {root}; keep images inside the manifest's folder (or set dataset.root)")
        paths.append(p)
        raw_labels.append((row.get(spec.label_column) or "").strip())
    labels, values = label_codes(raw_labels)
    metadata = {c: [r.get(c) for r in rows] for c in columns if c not in (spec.path_column, spec.label_column) and c is not None}
    return _path_dataset(spec.name or spec.path.stem, "csv", root, paths, labels, tuple(values), metadata)


def label_codes(raw: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Text labels -> integer codes and class names; numbers sort as numbers ("2" before "10")."""
    values = sorted(set(raw), key=lambda v: (0, float(v), "") if v.replace(".", "", 1).lstrip("-").isdigit() else (1, 0, v))
    lookup = {v: i for i, v in enumerate(values)}
    return np.asarray([lookup[v] for v in raw], np.int64), tuple(values)


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

    fp = _hash_arrays(*vectors.values(), labels)
    others = {k: v for k, v in meta.items() if k != label_column}
    return Dataset(name=name, kind=kind, class_names=names, labels=labels, ids=tuple(f"{name}-{i}" for i in range(n)), fingerprint=fp,
                   reader=reader, metadata=others, vectors={k: np.asarray(v, np.float32) for k, v in vectors.items()}, source=source,
                   has_images=thumbs is not None)


def _load_embeddings(spec) -> Dataset:
    from .projector import read_metadata, read_sprite, read_vectors_tsv

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
            thumbs = np.stack([_square(read_image_file(f), 32) for f in files])
        else:
            if not spec.sprite_dim:
                raise DataError("dataset.sprite_dim: a sprite image needs the side of one tile in pixels")
            thumbs = read_sprite(spec.images, (spec.sprite_dim, spec.sprite_dim), n)
    return _precomputed(spec.name or p.stem, "embeddings", vectors, meta, spec.label_column, thumbs, str(p), str(spec.metadata))


def _square(img: np.ndarray, size: int) -> np.ndarray:
    from .models import make_thumbnail

    return make_thumbnail(img, size)


def _load_projector(spec) -> Dataset:
    from .projector import parse_config, read_metadata, read_sprite, read_tensor

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


_LOADERS = {
    "digits": _load_digits,
    "image_folder": _load_image_folder,
    "csv": _load_csv,
    "idx": _load_idx,
    "npz": _load_npz,
    "embeddings": _load_embeddings,
    "tensorboard_projector": _load_projector,
}


def load_dataset(spec) -> Dataset:
    """Open the dataset a spec names; check that it can make a report (>= 2 samples, >= 2 classes)."""
    ds = _LOADERS[spec.kind](spec)
    if len(ds) == 0:
        raise DataError(f"dataset: {ds.name} has no samples")
    present = int((ds.counts > 0).sum())
    if present < 2:
        raise DataError(f"dataset: {ds.name} has only one class ({ds.class_names[int(ds.labels[0])]!r}); a report compares classes, so give at least two")
    return ds


def select_samples(ds: Dataset, *, limit: int | None, method: str, seed: int, max_samples: int | None = None) -> Selection:
    """Pick the samples a build uses: all, or ``limit`` of them by ``first``/``random``/``stratified``."""
    n = len(ds)
    cap = min(x for x in (limit, max_samples, n) if x is not None)
    if cap >= n:
        idx = np.arange(n)
        method = "all"
    elif method == "first":
        idx = np.arange(cap)
    elif method == "random":
        idx = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
    else:  # stratified: proportional allocation, largest remainders, at least one per class where possible
        rng = np.random.default_rng(seed)
        counts = ds.counts
        share = counts / counts.sum() * cap
        take = np.floor(share).astype(int)
        take = np.minimum(np.maximum(take, (counts > 0).astype(int)), counts)
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        i = 0
        while take.sum() < cap and i < 10 * len(order):
            c = order[i % len(order)]
            if take[c] < counts[c]:
                take[c] += 1
            i += 1
        while take.sum() > cap:
            c = int(np.argmax(take))
            take[c] -= 1
        chosen = [rng.choice(np.flatnonzero(ds.labels == c), size=int(t), replace=False) for c, t in enumerate(take) if t]
        idx = np.sort(np.concatenate(chosen))
    used = np.bincount(ds.labels[idx], minlength=len(ds.class_names))
    return Selection(
        indices=idx.astype(np.int64),
        used_per_class={c: int(u) for c, u in zip(ds.class_names, used)},
        total_per_class={c: int(t) for c, t in zip(ds.class_names, ds.counts)},
        method=method,
    )
