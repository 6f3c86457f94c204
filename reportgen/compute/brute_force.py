"""Exact k nearest neighbours by brute force: blocked float32 GEMMs, a chunked top-k and an exact
re-ranking, on every core. The layer's exact graph (``neighbours.exact_graph``) and t-SNE's
neighbour index (``reducers.tsne.exact_index``) are this search."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from queue import Queue
from typing import Any

import numpy as np

#: Up to this many dimensions a euclidean search adds each row's bias -|b|^2/2 inside the GEMM (one
#: more column on both sides), not as a pass over every score block: at 50 dimensions that pass
#: was an eighth of the search; with more the GEMM dominates and the copies would cost memory.
FOLD_DIMS = 64


def top_m(scores: np.ndarray, m: int, *, chunk: int = 16) -> np.ndarray:
    """Column indices of the m largest values of every row (unordered), ties included whole.

    NumPy's ``argpartition`` over every column is ~20x slower than a GEMM-bound block needs. The
    columns are dealt into chunks (chunk c holds columns c, c + n/chunk, c + 2n/chunk, ...: its
    maxima are then elementwise maxima of contiguous rows, not a reduction over a short inner
    axis), the m chunks with the largest maxima are found, and only their columns are searched (the
    m largest values lie there). When several columns tie with the m-th value, every tied column is
    a candidate of that row, so which ones win does not depend on the search order: the caller
    breaks ties by row index. A column outside the searched chunks can only tie, never beat, the
    m-th value, and only where its chunk's maximum equals it: only such rows are scanned whole.
    Returns an (rows, m') array with m' >= m (extra columns hold -1 where a row has fewer ties).
    """
    b, n = scores.shape
    m = int(min(m, n))
    nc = n // chunk
    if nc <= m:  # few columns: every one is a candidate
        cand = np.broadcast_to(np.arange(n), (b, n))
        maxima, mc = None, 0
    else:
        body = nc * chunk
        view = (
            scores.reshape(b, chunk, nc)
            if body == n and scores.flags.c_contiguous
            else np.lib.stride_tricks.as_strided(
                scores, (b, chunk, nc), (scores.strides[0], nc * scores.strides[1], scores.strides[1]), writeable=False
            )
        )
        maxima = view[:, 0].copy()
        for i in range(1, chunk):
            np.maximum(maxima, view[:, i], out=maxima)
        mc = m
        best = np.argpartition(maxima, nc - mc, axis=1)[:, nc - mc :]
        cand = (best[:, :, None] + nc * np.arange(chunk)[None, None, :]).reshape(b, -1)
        if body < n:  # the columns past the last whole chunk are candidates of every row
            cand = np.hstack([cand, np.broadcast_to(np.arange(body, n), (b, n - body))])
    vals = np.take_along_axis(scores, cand, 1)
    sel = np.argpartition(vals, vals.shape[1] - m, axis=1)[:, vals.shape[1] - m :]
    out = np.take_along_axis(cand, sel, 1)
    # ties at the boundary: a row with more columns equal to its m-th value than were selected
    threshold = np.take_along_axis(vals, sel, 1).min(1)
    more = np.count_nonzero(vals >= threshold[:, None], axis=1) > m
    if maxima is not None:
        more |= np.count_nonzero(maxima >= threshold[:, None], axis=1) > mc
    tied = np.flatnonzero(more)
    if len(tied):
        at_least = np.count_nonzero(scores[tied] >= threshold[tied, None], axis=1)
        width = int(at_least.max())
        if width > m:
            wide = np.full((b, width), -1, np.int64)
            wide[:, :m] = out
            for r in tied:
                cols = np.flatnonzero(scores[r] >= threshold[r])
                wide[r, : len(cols)] = cols
            out = wide
    return out


def exact_search(
    queries: np.ndarray,
    x: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    block_bytes: int = 256 << 20,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of x to each query by brute force, blockwise: a float32 GEMM per block of
    queries, then top-k. Returns (indices int64, distances float64), each (len(queries), k), ascending.

    When ``queries is x`` each row is left out of its own neighbours (duplicates still count).
    The GEMM ranks (cosine: q.b of unit-normalised rows; euclidean: q.b - |b|^2/2) and the best
    k+8 candidates are re-ranked by their distances computed again from the rows, each on its own
    (1 - cos; euclidean from differences summed in float64, no cancellation), so rounding can only
    matter when more than 8 candidates tie at the k-th place, and no distance depends on how the
    GEMM was cut into blocks (OpenBLAS's float32 products differ in the last bit with the block's
    rows on some CPUs: an AMD EPYC with the Haswell kernels, 3e-7). Blocks run on ``threads``
    threads (default: the cores, at most 8), each a one-thread GEMM; BLAS's own thread count is
    restored after. Peak memory: ``block_bytes`` of float32 score blocks in all, never the queries
    x N matrix. Ties in distance go to the lower row of x, so the result is the same on every run
    and any number of threads.
    """
    same = queries is x
    n = len(x)
    k = int(min(k, n - 1 if same else n))
    data: np.ndarray = np.ascontiguousarray(x, dtype=np.float32)
    q_all: np.ndarray = data if same else np.ascontiguousarray(queries, dtype=np.float32)
    bias = None
    if metric == "cosine":
        data = _unit_rows(data)
        q_all = data if same else _unit_rows(q_all)
    right, left, m = data, q_all, min(n - 1 if same else n, k + 8)
    if metric != "cosine":
        bias = -0.5 * np.einsum("ij,ij->i", data, data)
        if data.shape[1] <= FOLD_DIMS:  # the bias rides in the GEMM as one more column: [q, 1] . [b, bias]
            right = np.hstack([data, bias[:, None]])
            left = np.hstack([q_all, np.ones((len(q_all), 1), np.float32)])
            bias = None
    nq = len(q_all)
    workers = max(1, min(threads if threads is not None else worker_threads(), -(-nq // 256)))
    block = int(max(16, min(4096, block_bytes // (4 * n * workers), -(-nq // workers))))  # work for each
    indices = np.empty((nq, k), np.int64)
    distances = np.empty((nq, k))
    buffers: Queue[np.ndarray] = Queue()
    for _ in range(workers):
        buffers.put(np.empty((min(block, max(nq, 1)), n), np.float32))

    def one(s: int) -> None:
        e = min(s + block, nq)
        buf = buffers.get()
        try:
            scores = buf[: e - s]
            np.matmul(left[s:e], right.T, out=scores)  # BLAS reads the transpose in place: no copy
            if bias is not None:
                scores += bias
            if same:
                scores[np.arange(e - s), np.arange(s, e)] = -np.inf  # never its own neighbour
            cand = top_m(scores, m)
            valid = cand >= 0
            safe = np.where(valid, cand, 0)
            d = np.empty(cand.shape)
            for r in range(s, e, 256):  # bounded temporaries: (256, k+8, dim)
                q = q_all[r : min(r + 256, e), None, :]
                rows = data[safe[r - s : r - s + len(q)]]
                d[r - s : r - s + len(q)] = (
                    1.0 - np.einsum("ijk,ik->ij", rows, q[:, 0, :])  # NumPy's own loop: row by row
                    if metric == "cosine"
                    else np.sqrt(((rows - q) ** 2).sum(-1, dtype=np.float64))
                )
        finally:
            buffers.put(buf)
        d = np.where(valid, d, np.inf)
        rank = np.lexsort((np.where(valid, cand, n), d), axis=1)[:, :k]  # by distance, then by row
        indices[s:e] = np.take_along_axis(cand, rank, 1)
        distances[s:e] = np.clip(np.take_along_axis(d, rank, 1), 0, None)

    starts = range(0, nq, block)
    if workers == 1:
        for s in starts:
            one(s)
    else:  # each block writes its own rows: the result does not depend on the number of threads
        with _blas_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, starts))
    return indices, distances


def _blas_threads(limit: int) -> Any:
    """BLAS on ``limit`` threads inside the block, its pool's size restored after: blocks of rows on
    every core, each with a one-thread GEMM, beat one block at a time with a threaded GEMM (most of
    a block's time is NumPy's selection, which runs on one core)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it BLAS keeps its threads
        return nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def _unit_rows(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1)


def worker_threads() -> int:
    """Threads for blocks of rows (NumPy's gathers, selections and products release the GIL): the
    cores this process may use, at most 8. The exact search's and the graph's re-ranking's."""
    from ..machine import cores

    return max(1, min(8, cores()))
