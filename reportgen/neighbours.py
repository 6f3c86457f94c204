"""Neighbour graphs: the k nearest neighbours of every sample of a layer, computed once per layer.

Every kNN reader (neighbour strips, hard samples, outliers, kNN accuracy, UMAP) reads the same
graph. Pure NumPy: a rebuild that needs a graph imports no model library.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class NeighbourGraph:
    """k nearest neighbours of every sample (self excluded), ascending distance."""

    indices: np.ndarray  # (N, K) int64
    distances: np.ndarray  # (N, K) float64
    metric: str
    method: str = "exact"  # how it was computed: "exact" or the approximate index's name

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def top_m(scores: np.ndarray, m: int, *, chunk: int = 32) -> np.ndarray:
    """Column indices of the m largest values of every row (unordered), ties included whole.

    NumPy's ``argpartition`` over every column is ~20x slower than a GEMM-bound block needs; the
    row maxima of chunks of 32 columns are partitioned first, and only the best m chunks' columns
    are searched (the m largest values lie in the m chunks with the largest maxima). When several
    columns tie with the m-th value, every tied column is a candidate of that row, so which ones
    win does not depend on the search order: the caller breaks ties by row index.
    Returns an (rows, m') array with m' >= m (extra columns hold -1 where a row has fewer ties).
    """
    b, n = scores.shape
    m = int(min(m, n))
    nc = -(-n // chunk)
    if nc * chunk != n:
        padded = np.full((b, nc * chunk), -np.inf, np.float32)
        padded[:, :n] = scores
    else:
        padded = scores
    maxima = padded.reshape(b, nc, chunk).max(-1)
    mc = min(m, nc)
    best = np.argpartition(maxima, nc - mc, axis=1)[:, nc - mc :] if mc < nc else np.broadcast_to(np.arange(nc), (b, nc))
    cand = (best[:, :, None] * chunk + np.arange(chunk)[None, None, :]).reshape(b, -1)
    vals = np.take_along_axis(padded, cand, 1)
    sel = np.argpartition(vals, vals.shape[1] - m, axis=1)[:, vals.shape[1] - m :]
    out = np.take_along_axis(cand, sel, 1)
    # ties at the boundary: a row with more columns equal to its m-th value than were selected
    threshold = np.take_along_axis(vals, sel, 1).min(1)
    at_least = (scores >= threshold[:, None]).sum(1)
    tied = np.flatnonzero(at_least > m)
    if len(tied):
        width = int(at_least[tied].max())
        wide = np.full((b, width), -1, np.int64)
        wide[:, :m] = out
        for r in tied:
            cols = np.flatnonzero(scores[r] >= threshold[r])
            wide[r, : len(cols)] = cols
        out = wide
    return out


def exact_graph(x: np.ndarray, k: int, *, metric: str = "cosine", block_bytes: int = 256 << 20) -> NeighbourGraph:
    """Exact k nearest neighbours by brute force, blockwise: a float32 GEMM per block of rows, then top-k.

    Cosine distance is 1 - cos of unit-normalised rows, straight from the GEMM. For euclidean the
    GEMM ranks by a.b - |b|^2/2 and the best k+8 candidates are re-ranked by their distances
    computed from differences (no cancellation), so rounding can only matter when more than 8
    candidates tie at the k-th place. Peak memory: one (block, N) float32 score block
    (``block_bytes``), never the N x N matrix. Ties in distance go to the lower sample row, so the
    graph is the same on every run.
    """
    n = len(x)
    k = int(min(k, n - 1))
    data = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        data = data / np.where(norms > 0, norms, 1)
        bias, m = None, k
    else:
        bias = -0.5 * np.einsum("ij,ij->i", data, data)
        m = min(n - 1, k + 8)
    block = int(max(16, min(4096, block_bytes // (4 * n))))
    buf = np.empty((min(block, n), n), np.float32)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k))
    for s in range(0, n, block):
        e = min(s + block, n)
        scores = buf[: e - s]
        np.matmul(data[s:e], data.T, out=scores)  # BLAS reads the transpose in place: no copy
        if bias is not None:
            scores += bias
        scores[np.arange(e - s), np.arange(s, e)] = -np.inf  # never its own neighbour (duplicates still count)
        cand = top_m(scores, m)
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        if metric == "cosine":
            d = 1.0 - np.take_along_axis(scores, safe, 1).astype(np.float64)
        else:
            d = np.empty(cand.shape)
            for r in range(s, e, 256):  # bounded temporaries: (256, k+8, dim)
                q = data[r : min(r + 256, e), None, :]
                d[r - s : r - s + len(q)] = np.sqrt(((data[safe[r - s : r - s + len(q)]] - q) ** 2).sum(-1, dtype=np.float64))
        d = np.where(valid, d, np.inf)
        rank = np.lexsort((np.where(valid, cand, n), d), axis=1)[:, :k]  # by distance, then by row
        indices[s:e] = np.take_along_axis(cand, rank, 1)
        distances[s:e] = np.clip(np.take_along_axis(d, rank, 1), 0, None)
    return NeighbourGraph(indices=indices, distances=distances, metric=metric)

