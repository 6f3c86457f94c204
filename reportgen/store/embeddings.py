"""Embedding store: per-layer float32 ``.npy`` files plus a JSON manifest, keyed by content.

Layout of one entry (``<cache>/embeddings/<key>/``)::

    manifest.json     format, key, model (arch, source, weights sha256), dataset fingerprint,
                      preprocessing, layers {name: {file, shape, reshape, sha256}}, counts
    samples.json      {"ids": [...], "indices": [...], "bad": [[id, reason], ...]}
    labels.npy        int64 (N,)
    thumbnails.npy    uint8 (N, t, t, 3)
    layer-<slug>.npy  float32 (N, d), one per layer, rows in the order of samples.json

An entry is written in a temporary folder and renamed into place when complete, so an
interrupted build leaves no half-written entry. On load every file is checked against the
manifest (shape and SHA-256); a mismatch is logged and the entry recomputed, never used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import CacheError
from ..results import Embeddings, slug
from ..streaming import track
from .files import default_cache_dir, file_sha256, remove_stale_temps, temp_name

log = logging.getLogger(__name__)

FORMAT = 2
#: The files of an entry besides its layers, each checked against the manifest's SHA-256.
ENTRY_FILES = ("labels.npy", "thumbnails.npy", "hashes.npy", "samples.json")

Origin = Literal["computed", "cache", "input"]


class ShardLike(Protocol):
    """What the store reads of a shard of embeddings (``embed.extractor.Shard``)."""

    @property
    def indices(self) -> np.ndarray: ...
    @property
    def embeddings(self) -> Mapping[str, np.ndarray]: ...
    @property
    def thumbnails(self) -> np.ndarray: ...
    @property
    def hashes(self) -> np.ndarray | None: ...
    @property
    def bad(self) -> tuple[tuple[int, str], ...]: ...
    @property
    def reshapes(self) -> Mapping[str, str]: ...


class _RowFile:
    """An .npy file written row block by row block with plain writes (no memory map, so written
    rows do not stay resident); the header is fixed up with the final row count on close."""

    HEADER = 128  # bytes reserved for the .npy header (v1.0 headers are padded to 64-byte multiples)

    def __init__(self, path: Path, dtype: npt.DTypeLike, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), tuple(row_shape), 0
        self.f = open(path, "wb")
        self.f.write(b"\0" * self.HEADER)

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise CacheError(f"internal: rows of shape {arr.shape[1:]} written to a file of rows {self.row_shape}")
        self.f.write(arr.data.cast("B"))
        self.rows += len(arr)

    def close(self) -> None:
        shape = (self.rows, *self.row_shape)
        header = f"{{'descr': {self.dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        room = self.HEADER - 10 - 1
        if len(header) > room:
            raise CacheError("internal: .npy header does not fit")
        self.f.seek(0)
        self.f.write(
            b"\x93NUMPY\x01\x00"
            + (self.HEADER - 10).to_bytes(2, "little")
            + (header.ljust(room) + "\n").encode("latin1")
        )
        self.f.close()


class EntryWriter:
    """Streams shards into an entry: each shard's rows are appended to the per-layer files, so
    memory use is one shard's worth, whatever the number of samples."""

    def __init__(self, root: Path, key: str, thumb: int) -> None:
        self.root, self.key, self.thumb = root, key, thumb
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(root)
        self.tmp = root / temp_name(key)
        self.tmp.mkdir()
        self.count = 0
        self.layers: dict[str, _RowFile] = {}
        self.files: dict[str, str] = {}
        self.thumbs = _RowFile(self.tmp / "thumbnails.npy", np.uint8, (thumb, thumb, 3))
        self.hashes = _RowFile(self.tmp / "hashes.npy", np.uint8, (16,))
        self.labels: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        self.bad: list[tuple[int, str]] = []
        self.reshapes: dict[str, str] = {}

    def add(self, shard: ShardLike, labels: np.ndarray) -> None:
        n = len(shard.indices)
        self.bad += shard.bad
        self.reshapes.update(shard.reshapes)
        if n == 0:
            return
        for name, arr in shard.embeddings.items():
            if name not in self.layers:
                fname = f"layer-{slug(name)}.npy"
                self.files[name] = fname
                self.layers[name] = _RowFile(self.tmp / fname, np.float32, (arr.shape[1],))
            self.layers[name].write(arr)
        self.thumbs.write(shard.thumbnails)
        self.hashes.write(shard.hashes if shard.hashes is not None else np.zeros((n, 16), np.uint8))
        self.labels.append(np.asarray(labels, np.int64))
        self.indices.append(np.asarray(shard.indices, np.int64))
        self.count += n

    def commit(self, ids: list[str], bad: list[tuple[str, str]], manifest: dict) -> Path:
        if self.count == 0:
            self.abort()
            raise CacheError("no sample could be read; nothing to store")
        for f in self.layers.values():
            f.close()
        self.thumbs.close()
        self.hashes.close()
        labels, indices = np.concatenate(self.labels), np.concatenate(self.indices)
        np.save(self.tmp / "labels.npy", labels)
        samples = {"ids": ids, "indices": indices.tolist(), "bad": [[i, r] for i, r in bad]}
        (self.tmp / "samples.json").write_text(json.dumps(samples), encoding="utf-8")
        layer_meta = {
            name: {
                "file": f.path.name,
                "shape": [f.rows, *f.row_shape],
                "reshape": self.reshapes.get(name),
                "sha256": file_sha256(f.path),
            }
            for name, f in self.layers.items()
        }
        manifest = {
            **manifest,
            "format": FORMAT,
            "key": self.key,
            "count": self.count,
            "layers": layer_meta,
            "files": {f: file_sha256(self.tmp / f) for f in ENTRY_FILES},
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        final = self.root / self.key
        if final.exists():  # a concurrent build got there first, or a stale entry: replace it whole
            trash = self.root / temp_name(self.key).replace(".tmp-", ".old-")
            try:
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            except OSError:
                pass
        try:
            os.replace(self.tmp, final)
        except OSError:
            if (final / "manifest.json").exists():  # another writer won the race with the same content
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                raise
        return final

    def abort(self) -> None:
        for f in [*self.layers.values(), self.thumbs, self.hashes]:
            try:
                f.f.close()
            except Exception:  # closing is best effort on the way out
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def _read_entry(path: Path, key: str, *, verify: bool, origin: Origin) -> Embeddings:
    """One entry read back: the manifest checked (format, key, digests, shapes, row counts), the
    layers and thumbnails memory-mapped and tracked (``streaming.track``) in one go."""
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("key") != key:
        raise ValueError("format or key mismatch")
    expected = {**manifest["files"], **{m["file"]: m["sha256"] for m in manifest["layers"].values()}}
    if verify:
        changed = [f for f, digest in expected.items() if file_sha256(path / f) != digest]
        if changed:
            raise ValueError(f"{changed[0]} changed")
    samples = json.loads((path / "samples.json").read_text(encoding="utf-8"))
    layers = {name: np.load(path / meta["file"], mmap_mode="r") for name, meta in manifest["layers"].items()}
    for name, meta in manifest["layers"].items():
        if list(layers[name].shape) != meta["shape"] or layers[name].dtype != np.float32:
            raise ValueError(f"{meta['file']} has shape {layers[name].shape}")
    thumbs = np.load(path / "thumbnails.npy", mmap_mode="r")
    labels = np.load(path / "labels.npy")
    hashes = np.load(path / "hashes.npy") if (path / "hashes.npy").exists() else None
    n = manifest["count"]
    if len(labels) != n or len(samples["ids"]) != n or len(thumbs) != n:
        raise ValueError("row counts disagree")
    track(*layers.values(), thumbs)
    return Embeddings(
        key=key,
        origin=origin,
        path=path,
        ids=tuple(samples["ids"]),
        indices=np.asarray(samples["indices"], np.int64),
        labels=labels,
        layers=layers,
        reshapes={k: v["reshape"] for k, v in manifest["layers"].items()},
        thumbnails=thumbs,
        bad=tuple((str(i), str(r)) for i, r in samples["bad"]),
        manifest=manifest,
        hashes=hashes,
    )


class EmbeddingStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "embeddings"

    def writer(self, key: str, thumb: int) -> EntryWriter:
        try:
            return EntryWriter(self.dir, key, thumb)
        except OSError as exc:
            raise CacheError(
                f"cache: cannot write to {self.dir} ({exc.strerror}); set cache_dir in the spec or --cache-dir"
            ) from None

    def load(self, key: str, *, verify: bool = True, origin: Origin = "cache") -> Embeddings | None:
        """The entry ``key`` with its layers and thumbnails memory-mapped (every file checked against
        its SHA-256 when ``verify``), or None; a damaged or mismatched entry is removed."""
        path = self.dir / key
        if not (path / "manifest.json").exists():
            return None
        try:
            return _read_entry(path, key, verify=verify, origin=origin)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            log.warning("cache entry %s is corrupt or mismatched (%s); recomputing", key, exc)
            self.remove(key)
            return None

    def remove(self, key: str) -> None:
        path = self.dir / key
        if path.exists():
            trash = self.dir / temp_name(key).replace(".tmp-", ".old-")
            try:
                os.replace(path, trash)
            except OSError:
                return
            shutil.rmtree(trash, ignore_errors=True)

    def clear(self) -> int:
        """Remove every cached thing (embeddings, maps, graphs, probes, figures; numba's compiled
        kernels stay); returns how many embedding entries were removed."""
        if not self.root.exists():
            return 0
        n = sum(1 for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.dir.exists() else 0
        for p in self.root.iterdir():
            if p.is_dir() and p.name != "numba":
                shutil.rmtree(p, ignore_errors=True)
        return n
