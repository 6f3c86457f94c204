"""Neighbour graphs: the k nearest neighbours of every sample of a layer, computed once per layer.

Every kNN reader (neighbour strips, hard samples, outliers, kNN accuracy, UMAP) reads the same
graph. Pure NumPy: a rebuild that needs a graph imports no model library.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .brute_force import exact_search, worker_threads


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


def exact_graph(x: np.ndarray, k: int, *, metric: str = "cosine", block_bytes: int = 256 << 20) -> NeighbourGraph:
    """Exact k nearest neighbours of every row of x among the others (``exact_search`` of x in itself)."""
    indices, distances = exact_search(x, x, k, metric=metric, block_bytes=block_bytes)
    return NeighbourGraph(indices=indices, distances=distances, metric=metric)


# ----------------------------------------------------------------------------- approximate graph

#: Above this many samples ``neighbour_index: auto`` builds the approximate graph (measured: the
#: exact graph costs 6 s at 20,000 samples of 1,280 dimensions and 16 s at 30,000, where the
#: approximate one takes 0.38x and 0.27x of that at recall 0.99; docs/benchmarks.md).
APPROXIMATE_ABOVE = 20_000
#: Dimensions of the projection the index searches in (candidates only: the final ranking is exact).
INDEX_DIMS = 128
#: Candidates per sample, as a multiple of k, re-ranked by exact distances in the full space.
CANDIDATE_FACTOR = 3


@dataclass(frozen=True)
class GraphQuality:
    """How a graph was built and how close it is to the exact one: recall@k against exact
    neighbours of ``queries`` seeded sample rows (1.0 and 0 queries for an exact graph)."""

    method: str
    recall: float
    queries: int
    k: int


def build_graph(
    x: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    method: str = "auto",
    seed: int = 0,
    approximate_above: int = APPROXIMATE_ABOVE,
) -> tuple[NeighbourGraph, GraphQuality]:
    """The layer's neighbour graph: exact while that is cheap, else approximate with its recall
    measured against exact search on a seeded sample of queries."""
    n = len(x)
    k = int(min(k, n - 1))
    if method == "exact" or (method == "auto" and n <= approximate_above):
        return exact_graph(x, k, metric=metric), GraphQuality("exact", 1.0, 0, k)
    g = approximate_graph(x, k, metric=metric, seed=seed)
    rows = np.sort(np.random.default_rng(seed + 1).choice(n, recall_queries(n, x.shape[1]), replace=False))
    return g, GraphQuality(g.method, graph_recall(x, g, rows), len(rows), k)


def nearest_fitted(z: np.ndarray, fitted: np.ndarray, rest: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """For each row in ``rest``, its k nearest rows among ``fitted`` in the (low-dimensional) space
    ``z`` (e.g. PCA scores), and inverse-distance weights: how a sampled map places the samples it
    was not fitted on, for its density layer. Returns (positions into ``fitted``, weights)."""

    index = hnsw_index(np.ascontiguousarray(z[fitted], np.float32), "euclidean")
    index.hnsw.efSearch = 64
    pos = np.empty((len(rest), k), np.int64)
    w = np.empty((len(rest), k))
    for s in range(0, len(rest), 65536):
        d2, i = index.search(np.ascontiguousarray(z[rest[s : s + 65536]], np.float32), k)
        i = np.where(i < 0, 0, i)
        pos[s : s + len(i)] = i
        wt = 1.0 / (np.sqrt(np.clip(d2, 0, None)) + 1e-9)
        w[s : s + len(i)] = wt / wt.sum(1, keepdims=True)
    return pos, w


def recall_queries(n: int, d: int) -> int:
    """How many queries the recall is measured on: 500 (a recall near 0.95 is then known within
    about +-0.005 over their 500 k neighbours), fewer where exact search costs too much (at least 200)."""
    return int(min(n, 500, max(200, 3e11 // max(1, n * d))))


def _unit(a: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))[:, None]
    return a / np.where(norms > 0, norms, 1)


#: Queries between two hand-backs of the candidate rows' pages (a memory-mapped layer): 16,384
#: queries read about half of a million rows; the whole file stayed resident with 65,536 (5 GB).
RELEASE_EVERY = 16_384


def approximate_graph(
    x: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    seed: int = 0,
    dims: int = INDEX_DIMS,
    factor: int = CANDIDATE_FACTOR,
    workers: int | None = None,
) -> NeighbourGraph:
    """k nearest neighbours of every row, approximately: a faiss HNSW index over a PCA projection
    of the rows (unit rows for cosine) proposes ``factor * k`` candidates, which are ranked by exact
    distances in the full space. The full vectors are read in chunks and never copied whole; the
    index holds N x ``dims`` floats. The index is built deterministically (``hnsw_index``) and the
    re-ranking splits rows, not sums, between ``workers`` threads: the same graph on every run,
    whatever the cores."""
    n = len(x)
    k = int(min(k, n - 1))
    m = int(min(n - 1, factor * k))
    z, sqnorm = project(x, metric=metric, seed=seed, dims=dims)
    index = hnsw_index(z, metric)
    index.hnsw.efSearch = max(64, m + 16)
    g = rerank(x, lambda s, e: index.search(z[s:e], m + 1)[1], k, metric=metric, sqnorm=sqnorm, workers=workers)
    return NeighbourGraph(
        indices=g.indices,
        distances=g.distances,
        metric=metric,
        method=f"approximate (faiss HNSW on a PCA-{z.shape[1]} projection, exact re-ranking)",
    )


def project(
    x: np.ndarray, *, metric: str = "cosine", seed: int = 0, dims: int = INDEX_DIMS
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dims) float32 scores of the rows on the top principal axes of a seeded 20,000-row sample
    (unit rows and unit scores for cosine), and the rows' squared norms, in one streamed pass."""
    from ..streaming import row_chunks

    n, d = x.shape
    rng = np.random.default_rng(seed)
    sample = np.asarray(x[np.sort(rng.choice(n, min(n, 20_000), replace=False))], np.float64)
    sample = _unit(sample) if metric == "cosine" else sample
    mu = sample.mean(0)
    r = min(dims, d)
    proj = None
    if r < d:  # the projection: top principal axes of the sample (eigenvectors of its covariance)
        cov = np.cov(sample, rowvar=False)
        _, vecs = np.linalg.eigh(cov)
        proj = np.ascontiguousarray(vecs[:, ::-1][:, :r], dtype=np.float32)
    del sample
    z = np.empty((n, r), np.float32)
    sqnorm = np.empty(n, np.float32)  # squared row norms, for exact distances without re-reading
    mu32 = mu.astype(np.float32)
    for start, c in row_chunks(x):
        c = np.asarray(c, np.float32)
        sqnorm[start : start + len(c)] = np.einsum("ij,ij->i", c, c)
        c = _unit(c) if metric == "cosine" else c
        p = (c - mu32) @ proj if proj is not None else c - mu32
        z[start : start + len(c)] = _unit(p) if metric == "cosine" else p
    return z, sqnorm


def hnsw_index(z: np.ndarray, metric: str = "cosine", *, threads: int | None = None) -> Any:
    """A faiss HNSW index (M = 16, efConstruction 40) of the rows of ``z``, the same on every run.
    The additions run on ``threads`` (default: every core where faiss builds deterministically, one
    elsewhere): faiss >= 1.15 adds rows in batches against a frozen snapshot and merges the links in
    a fixed order, so the links do not depend on the threads; older versions lock per node and the
    links follow the threads' timing, so they get one thread (tests/test_scale.py compares the indexes)."""
    import faiss

    index = faiss.IndexHNSWFlat(z.shape[1], 16, faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)
    index.hnsw.efConstruction = 40
    before = faiss.omp_get_max_threads()
    flag = getattr(faiss.cvar, "hnsw_deterministic_build", None)  # where the deterministic build is an option
    if threads is None:
        threads = before if deterministic_hnsw_build() else 1
    faiss.omp_set_num_threads(threads)
    try:
        if flag is not None:
            setattr(faiss.cvar, "hnsw_deterministic_build", True)  # noqa: B010 (a later faiss's switch)
        index.add(z)
    finally:
        faiss.omp_set_num_threads(before)
        if flag is not None:
            setattr(faiss.cvar, "hnsw_deterministic_build", flag)  # noqa: B010
    return index


def deterministic_hnsw_build() -> bool:
    """Whether this faiss builds an HNSW index the same way on any number of threads: its
    deterministic build exists (the default in 1.15; an option, switched on here, where
    ``hnsw_deterministic_build`` exists)."""
    import faiss

    return hasattr(faiss.cvar, "hnsw_deterministic_build") or hasattr(faiss, "hnsw_add_vertices_deterministic")


def rerank(
    x: np.ndarray,
    candidates: Callable[[int, int], np.ndarray],
    k: int,
    *,
    metric: str = "cosine",
    sqnorm: np.ndarray,
    workers: int | None = None,
) -> NeighbourGraph:
    """The graph from candidate rows: ``candidates(start, stop)`` gives each query row's candidates
    (-1: none), ranked here by exact distances in the full space (ties to the lower row). Rows are
    split between ``workers`` threads (default: the cores, at most 8), never a sum: the same graph
    whatever their number. Candidates' pages are handed back every RELEASE_EVERY queries."""
    from ..streaming import release

    n = len(x)
    norm = np.sqrt(sqnorm)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k))
    block = 512
    workers = worker_threads() if workers is None else workers
    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for start in range(0, n, RELEASE_EVERY):
            stop = min(start + RELEASE_EVERY, n)
            cand = candidates(start, stop)

            def one(b: int, start: int = start, stop: int = stop, cand: np.ndarray = cand) -> None:
                e = min(b + block, stop)
                indices[b:e], distances[b:e] = _rerank(x, b, cand[b - start : e - start], k, metric, norm, sqnorm)

            blocks = range(start, stop, block)
            if pool is None:
                for b in blocks:
                    one(b)
            else:  # each block writes its own rows
                list(pool.map(one, blocks))
            release(x, 0, n)  # the candidate rows read all over the file: RSS bounded, not the whole file
    return NeighbourGraph(indices=indices, distances=distances, metric=metric, method="re-ranked candidates")


def _rerank(
    x: np.ndarray, b: int, c: np.ndarray, k: int, metric: str, norm: np.ndarray, sqnorm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each query row b, b+1, ... among its candidate rows ``c`` (one row of
    candidates per query), by exact distances in the full space; ties go to the lower row."""
    e = b + len(c)
    d = x.shape[1]
    c = np.where(c < 0, b, c)  # rare unfilled slots: point at the query itself, dropped below
    q = np.asarray(x[b:e], np.float32)
    dots = np.einsum("qd,qkd->qk", q, np.asarray(x[c.ravel()], np.float32).reshape(len(c), c.shape[1], d)).astype(
        np.float64
    )
    if metric == "cosine":
        denom = norm[b:e, None].astype(np.float64) * norm[c]
        dist = 1.0 - np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    else:
        dist = np.sqrt(np.clip(sqnorm[b:e, None] + sqnorm[c] - 2 * dots, 0, None))
    dist[c == np.arange(b, e)[:, None]] = np.inf
    srt = np.sort(c, axis=1)  # a candidate listed twice (rare) must not take two places
    for i in np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(1)):
        _, first = np.unique(c[i], return_index=True)
        keep = np.zeros(c.shape[1], bool)
        keep[first] = True
        dist[i, ~keep] = np.inf
    rank = np.lexsort((c, dist), axis=1)[:, :k]
    return np.take_along_axis(c, rank, 1), np.clip(np.take_along_axis(dist, rank, 1), 0, None)


def _query_distances(q: np.ndarray, qq: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """(len(q), len(c)) float64 distances of float32 queries ``q`` (unit rows for cosine; ``qq``
    their squared norms) to a chunk of rows ``c``."""
    c = np.asarray(c, np.float32)
    if metric == "cosine":
        return 1.0 - (q @ _unit(c).T).astype(np.float64)
    return np.sqrt(np.clip(qq[:, None] - 2.0 * (q @ c.T) + np.einsum("ij,ij->i", c, c)[None, :], 0, None)).astype(
        np.float64
    )


def exact_neighbours_of(x: np.ndarray, rows: np.ndarray, k: int, *, metric: str = "cosine") -> np.ndarray:
    """Exact k nearest neighbours (self excluded) of a few rows, by one streamed pass over x: the
    recall's reference."""
    from ..streaming import row_chunks

    q = np.asarray(x[rows], np.float32)
    if metric == "cosine":
        q = _unit(q)
    qq = np.einsum("ij,ij->i", q, q)
    best_d = np.full((len(rows), k), np.inf)
    best_i = np.full((len(rows), k), -1, np.int64)
    for start, c in row_chunks(x):
        d = _query_distances(q, qq, c, metric)
        ids = np.arange(start, start + len(c))
        d[rows[:, None] == ids[None, :]] = np.inf
        kk = min(k, d.shape[1] - 1)
        part = (
            np.argpartition(d, kk, axis=1)[:, : kk + 1]
            if d.shape[1] > kk + 1
            else np.broadcast_to(np.arange(d.shape[1]), d.shape)
        )
        all_d = np.hstack([best_d, np.take_along_axis(d, part, 1)])
        all_i = np.hstack([best_i, ids[part]])
        order = np.lexsort((all_i, all_d), axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i


def graph_recall(x: np.ndarray, graph: NeighbourGraph, rows: np.ndarray) -> float:
    """recall@k of ``graph`` on ``rows``: the share of each row's exact k nearest neighbours that the
    graph lists (ties at the k-th distance count either way)."""
    k = graph.k
    truth = exact_neighbours_of(x, rows, k, metric=graph.metric)
    return float(np.mean([len(set(t) & set(g)) / k for t, g in zip(truth, graph.indices[rows])]))
