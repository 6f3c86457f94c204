"""Streaming over large (N, d) arrays: memory-mapped layers are read chunk by chunk, and the pages
of a chunk are handed back as soon as it is done, so a million-row layer never sits in memory.

Embeddings come from the store (or a user's ``.npy``) as read-only memory maps. Reading touches
their pages, which then count in the process's resident memory until the kernel needs them
back; ``row_chunks`` releases each chunk's pages after use (``madvise(MADV_DONTNEED)``: the data
stays in the page cache, the process's RSS does not grow with N).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Rows per chunk for an (N, d) float32 array: about 64 MB.
CHUNK_BYTES = 64 << 20


def chunk_rows(x: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> int:
    row = int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize if x.ndim > 1 else x.dtype.itemsize
    return int(max(256, chunk_bytes // max(1, row)))


def _mmap_of(x: np.ndarray) -> tuple[mmap.mmap | None, Any]:
    base: Any = x
    while base is not None:
        mm = getattr(base, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm, base
        base = getattr(base, "base", None)
    return None, None


def release(x: np.ndarray, start: int, stop: int) -> None:
    """Hand the pages of rows [start, stop) of a memory-mapped array back to the kernel (no-op for
    arrays in memory). Safe: the mapping stays valid, a later read faults the pages in again."""
    mm, base = _mmap_of(x)
    if mm is None or not hasattr(mm, "madvise") or not x.flags.c_contiguous:
        return
    row = x.strides[0] if x.ndim > 1 else x.itemsize
    # numpy maps from the file offset rounded down to the allocation granularity
    offset = (
        getattr(base, "offset", 0) % mmap.ALLOCATIONGRANULARITY
        + (x.__array_interface__["data"][0] - base.__array_interface__["data"][0])
        + start * row
    )
    page = mmap.PAGESIZE
    lo = (offset // page) * page
    hi = offset + (stop - start) * row
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, max(0, min(hi, len(mm)) - lo))
    except (OSError, ValueError):
        pass


_MAPPED: dict[int, weakref.ref] = {}  # id -> weak reference (arrays are not hashable)


def track(*arrays: np.ndarray) -> None:
    """Remember memory-mapped arrays so that ``release_all`` can hand their pages back (arrays in
    memory are ignored)."""
    for x in arrays:
        if _mmap_of(x)[0] is None:
            continue
        key = id(x)

        def forget(_ref: weakref.ref[np.ndarray], key: int = key) -> None:
            _MAPPED.pop(key, None)

        _MAPPED[key] = weakref.ref(x, forget)


def release_all() -> None:
    """Hand back the pages of every live tracked memory map (called at the end of each build stage):
    a stage that read a layer all over (a neighbour search, a sample) leaves its pages resident, and
    the next stage would carry them - 5 GB for a million 1,280-d rows."""
    for ref in list(_MAPPED.values()):
        x = ref()
        if x is not None:
            release(x, 0, len(x))


def row_chunks(x: np.ndarray, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows) over an (N, ...) array; each chunk's pages are released once the caller moves on."""
    n = len(x)
    step = chunk or chunk_rows(x)
    for s in range(0, n, step):
        e = min(s + step, n)
        yield s, x[s:e]
        release(x, s, e)


def gather_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows] for sorted or unsorted rows, read in ascending order (sequential on disk)."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + x.shape[1:], x.dtype)
    out[order] = x[rows[order]]
    return out


def nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Indices of rows holding NaN or Inf, in one streamed pass."""
    bad = []
    for s, c in row_chunks(x):
        m = ~np.isfinite(c).all(axis=tuple(range(1, c.ndim)))
        if m.any():
            bad.append(np.flatnonzero(m) + s)
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def cleaned(x: np.ndarray, folder: Path | None = None, *, in_memory_bytes: int = 1 << 30) -> tuple[np.ndarray, int]:
    """x with non-finite values set to 0, as float32, and how many rows had them. No copy when x is
    clean float32; a small x is copied in memory, a large one to a temporary memory-mapped file
    (under ``folder``), so a million-row layer with one NaN row does not need its size in RAM."""
    bad = nonfinite_rows(x)
    if not len(bad) and x.dtype == np.float32:
        return x, 0
    nbytes = int(np.prod(x.shape, dtype=np.int64)) * 4
    if nbytes <= in_memory_bytes:
        arr = np.asarray(x, dtype=np.float32)
        if len(bad):
            arr = np.where(np.isfinite(arr), arr, 0).astype(np.float32)
        return arr, int(len(bad))
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".cleaned-", suffix=".npy", dir=folder)
    os.close(fd)
    out = np.lib.format.open_memmap(name, mode="w+", dtype=np.float32, shape=x.shape)
    os.unlink(name)  # the mapping keeps the data; the file disappears when it is closed
    for s, c in row_chunks(x):
        out[s : s + len(c)] = np.where(np.isfinite(c), c, 0)
        release(out, s, s + len(c))
    return out, int(len(bad))


def select_rows(
    x: np.ndarray, rows: np.ndarray, folder: Path | None = None, *, in_memory_bytes: int = 1 << 30
) -> np.ndarray:
    """x[rows] without a full copy when ``rows`` is every row; a small selection in memory, a large
    one in a temporary memory-mapped file."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == len(x) and (len(rows) == 0 or (rows[0] == 0 and np.all(np.diff(rows) == 1))):
        return x
    nbytes = len(rows) * int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize
    if nbytes <= in_memory_bytes:
        return gather_rows(x, rows)
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".selected-", suffix=".npy", dir=folder)
    os.close(fd)
    out = np.lib.format.open_memmap(name, mode="w+", dtype=x.dtype, shape=(len(rows),) + x.shape[1:])
    track(out)
    os.unlink(name)
    step = chunk_rows(out)
    for s in range(0, len(rows), step):
        out[s : s + step] = gather_rows(x, rows[s : s + step])
        release(out, s, min(s + step, len(rows)))
        release(x, 0, len(x))
    return out
