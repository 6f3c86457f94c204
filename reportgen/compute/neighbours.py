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
    #: the approximate graph's index while this build holds it (None: exact, or read from the cache),
    #: for the nearest rows of other data sets (``RowIndex.search``)
    index: RowIndex | None = None

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
#: The HNSW index's search breadth (faiss's efSearch), at least the candidates asked for + 16.
SEARCH_BREADTH = 64


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
    # a breadth of 64: at 16 the alike million's 900,000 others took 6.8 s instead of 17.4 (recall@5
    # 0.961 instead of 0.977), but the slices (clusters of the map, placed samples included) found its
    # planted batch at Jaccard 0.25 instead of 0.29
    index.hnsw.efSearch = SEARCH_BREADTH
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
    """k nearest neighbours of every row, approximately (``RowIndex.graph``); the graph keeps its
    index (``NeighbourGraph.index``) for the nearest rows of other data sets."""
    return RowIndex(x, metric=metric, seed=seed, dims=dims).graph(k, factor=factor, workers=workers)


@dataclass(frozen=True, eq=False)
class Projection:
    """Rows -> the index's space: centred on a sample's mean, onto its top principal axes (none
    where the rows have no more dimensions than the index), unit rows and scores for cosine."""

    mean: np.ndarray  # (d,) float32
    axes: np.ndarray | None  # (d, dims) float32
    metric: str

    @property
    def dims(self) -> int:
        return len(self.mean) if self.axes is None else int(self.axes.shape[1])

    def __call__(self, c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, np.float32)
        c = _unit(c) if self.metric == "cosine" else c
        p = (c - self.mean) @ self.axes if self.axes is not None else c - self.mean
        return _unit(p) if self.metric == "cosine" else p


def fit_projection(x: np.ndarray, *, metric: str = "cosine", seed: int = 0, dims: int = INDEX_DIMS) -> Projection:
    """``project``'s projection: the top principal axes of a seeded 20,000-row sample."""
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
    return Projection(mu.astype(np.float32), proj, metric)


def project(
    x: np.ndarray,
    *,
    metric: str = "cosine",
    seed: int = 0,
    dims: int = INDEX_DIMS,
    projection: Projection | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dims) float32 scores of the rows on the top principal axes of a seeded 20,000-row sample
    (unit rows and unit scores for cosine), and the rows' squared norms, in one streamed pass."""
    from ..streaming import row_chunks

    projection = projection or fit_projection(x, metric=metric, seed=seed, dims=dims)
    z = np.empty((len(x), projection.dims), np.float32)
    sqnorm = np.empty(len(x), np.float32)  # squared row norms, for exact distances without re-reading
    for start, c in row_chunks(x):
        c = np.asarray(c, np.float32)
        sqnorm[start : start + len(c)] = np.einsum("ij,ij->i", c, c)
        z[start : start + len(c)] = projection(c)
    return z, sqnorm


class RowIndex:
    """Nearest rows of ``x``, approximately: a faiss HNSW index over a PCA projection of the rows
    (unit rows for cosine) proposes ``factor * k`` candidates, ranked by exact distances in the full
    space. It answers the graph of ``x`` in itself and the queries of other rows (a compared data
    set's nearest reference rows) the same way whenever it is built: the projection is fitted on a
    seeded sample, the index built deterministically (``hnsw_index``), the re-ranking splits rows,
    not sums, between threads. The full vectors are read in chunks and never copied whole; the index
    holds N x ``dims`` floats, which the graph's own queries read back (no second copy)."""

    def __init__(self, x: np.ndarray, *, metric: str = "cosine", seed: int = 0, dims: int = INDEX_DIMS) -> None:
        import faiss

        self.x, self.metric = x, metric
        self.projection = fit_projection(x, metric=metric, seed=seed, dims=dims)
        z, self.sqnorm = project(x, projection=self.projection)
        self.index = hnsw_index(z, metric)
        del z
        storage: Any = faiss.downcast_index(self.index.storage)  # the projected rows, as the index holds them
        self._z = faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.index.d).reshape(-1, self.index.d)
        self.method = f"approximate (faiss HNSW on a PCA-{self.index.d} projection, exact re-ranking)"

    def _candidates(self, z: np.ndarray, count: int, ef: int) -> np.ndarray:
        self.index.hnsw.efSearch = ef
        return self.index.search(np.ascontiguousarray(z, np.float32), count)[1]

    def graph(
        self, k: int, *, factor: int = CANDIDATE_FACTOR, workers: int | None = None, ef: int = SEARCH_BREADTH
    ) -> NeighbourGraph:
        """k nearest neighbours of every row of ``x`` among the others."""
        n = len(self.x)
        k = int(min(k, n - 1))
        m = int(min(n - 1, factor * k))
        g = rerank(
            self.x,
            lambda s, e: self._candidates(self._z[s:e], m + 1, max(ef, m + 16)),
            k,
            metric=self.metric,
            sqnorm=self.sqnorm,
            workers=workers,
        )
        return NeighbourGraph(g.indices, g.distances, self.metric, self.method, index=self)

    def search(
        self, q: np.ndarray, k: int, *, factor: int = CANDIDATE_FACTOR, ef: int = SEARCH_BREADTH
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances): for each row of ``q`` (another data set's, in the same space) its
        k nearest rows of ``x``, nearest first, with float64 distances from the rows themselves."""
        n = len(self.x)
        k = int(min(k, n))
        m = int(min(n, factor * k))
        indices = np.empty((len(q), k), np.int64)
        distances = np.empty((len(q), k))
        for s in range(0, len(q), 512):
            qs = np.asarray(q[s : s + 512], np.float32)
            c = self._candidates(self.projection(qs), m, max(ef, m + 16))
            indices[s : s + len(qs)], distances[s : s + len(qs)] = nearest_among(qs, self.x, c, k, self.metric)
        return indices, distances


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
    return _nearest_candidates(c, dist, k)


def _nearest_candidates(c: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest candidates (``c``, their distances ``dist``; ties to the lower row), a
    candidate listed twice taking one place."""
    srt = np.sort(c, axis=1)
    for i in np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(1)):
        _, first = np.unique(c[i], return_index=True)
        keep = np.zeros(c.shape[1], bool)
        keep[first] = True
        dist[i, ~keep] = np.inf
    rank = np.lexsort((c, dist), axis=1)[:, :k]
    return np.take_along_axis(c, rank, 1), np.clip(np.take_along_axis(dist, rank, 1), 0, None)


def nearest_among(q: np.ndarray, x: np.ndarray, c: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of x to each row of ``q`` (not rows of x) among its candidates ``c`` (-1:
    none), by float64 distances from the rows themselves: a copy's distance to its original is far
    below what squared norms in float32 can resolve."""
    from ..streaming import gather_rows

    missing = c < 0
    c = np.where(missing, 0, c)
    w = np.asarray(gather_rows(x, c.ravel()), np.float64).reshape(*c.shape, x.shape[1])
    v = np.asarray(q, np.float64)
    if metric == "cosine":
        dist = 1.0 - np.einsum("qd,qkd->qk", _unit(v), _unit(w.reshape(-1, w.shape[2])).reshape(w.shape))
    else:
        diff = w - v[:, None, :]
        dist = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
    dist[missing] = np.inf
    return _nearest_candidates(c, dist, k)


def _query_order(q: np.ndarray, qq: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """(len(q), len(c)) float32 keys that order a chunk of rows ``c`` by their distance to float32
    queries ``q`` (unit rows for cosine; ``qq`` their squared norms), nearest first: the negated
    cosine similarity (1 - s in float64 orders as -s, ties and all), the squared euclidean distance.
    Float32 keys halve what the recall's exact pass writes and sorts: the alike million's 384-d rows,
    500 queries, 9.8 -> 5.8 s (cosine) and 7.3 -> 5.4 s (euclidean), the same neighbours."""
    c = np.asarray(c, np.float32)
    if metric == "cosine":
        d = q @ _unit(c).T
        np.negative(d, out=d)
        return d
    d = q @ c.T
    d *= -2.0
    d += qq[:, None]
    d += np.einsum("ij,ij->i", c, c)[None, :]
    return np.maximum(d, 0, out=d)


def exact_neighbours_of(x: np.ndarray, rows: np.ndarray, k: int, *, metric: str = "cosine") -> np.ndarray:
    """Exact k nearest neighbours (self excluded) of a few rows, by one streamed pass over x: the
    recall's reference."""
    from ..streaming import row_chunks

    q = np.asarray(x[rows], np.float32)
    if metric == "cosine":
        q = _unit(q)
    qq = np.einsum("ij,ij->i", q, q)
    best_d = np.full((len(rows), k), np.inf, np.float32)
    best_i = np.full((len(rows), k), -1, np.int64)
    for start, c in row_chunks(x):
        d = _query_order(q, qq, c, metric)
        ids = np.arange(start, start + len(c))
        inside = np.flatnonzero((rows >= start) & (rows < start + len(c)))
        d[inside, rows[inside] - start] = np.inf  # each row is not its own neighbour
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
