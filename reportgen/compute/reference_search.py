"""Each compared sample's nearest row of the reference: the leak search's candidate from the layer
(``analyses.shift``), found the way the layer's own graph was - exactly, in one streamed pass over
the reference whatever its size, or through the approximate graph's index."""

from __future__ import annotations

import numpy as np

from .neighbours import NeighbourGraph, RowIndex, _unit, nearest_among

#: How widely the index is searched for a compared row's nearest reference row (candidates per
#: row and the HNSW's search breadth): on benchmarks/million.py's 200,000 alike rows and their 20,000
#: compared ones, the exact nearest row for 0.954 of the rows at the graph's own setting (3
#: candidates, breadth 64; 1.5 s) and for 199 of the 200 planted leaks (the missed one at a cosine
#: distance of 0.0002 from its original); 0.979 and all 200 at 10 and 256 (4.6 s; exact: 21 s).
REFERENCE_FACTOR, REFERENCE_EF = 10, 256


def reference_nearest(
    a: np.ndarray, b: np.ndarray, graph: NeighbourGraph | None, *, metric: str = "cosine", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``b`` its nearest row of ``a`` and the distance, searched as ``graph`` (a's
    neighbour graph) was built: exactly (``cross_nearest``) beside an exact graph, else through its
    index - the one this build made, or the same one made again (``RowIndex`` is built the same way
    every time, so the answer does not depend on whether the graph came from the cache). At the
    alike million (20,000 rows against 1,000,000 of 384 dimensions) the exact search reads 15 TFLOP
    (about 105 s on 2 cores); the index answers in a few seconds."""
    if graph is None or graph.method == "exact":
        return cross_nearest(a, b, metric=metric)
    index = graph.index if graph.index is not None else RowIndex(a, metric=metric, seed=seed)
    i, d = index.search(b, 1, factor=REFERENCE_FACTOR, ef=REFERENCE_EF)
    return i[:, 0], d[:, 0]


#: Reference rows per block of ``cross_nearest``: products of this width run near the BLAS's peak.
REFERENCE_BLOCK = 2048


def cross_nearest(
    a: np.ndarray, b: np.ndarray, *, metric: str = "cosine", block_bytes: int = 64 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """For every row of ``b``, its nearest row of ``a`` (exact) and the distance: one streamed pass
    over ``a`` (e.g. test samples against a training set). Peak memory: the score blocks stay
    within ``block_bytes`` whatever the sizes (20,000 queries against a chunk of a million rows
    once took 7 GB a block, and three such temporaries ran a 24 GiB machine out of memory).

    The winner of each block is picked on float32 scores (the cosine similarity; for euclidean
    q.c - |c|^2 / 2) in blocks of up to REFERENCE_BLOCK reference rows, and only the winners'
    distances are computed, in float64. With float64 distances of every pair in blocks of 256 rows,
    20,000 queries against 200,000 384-d rows took 42.7 s on 2 cores; this way 18.1 s, about what
    the products alone cost (benchmarks/million.py's alike data; benchmarks/run.py's nearest
    reference row)."""
    from ..streaming import row_chunks

    q = np.asarray(b, np.float32)
    if metric == "cosine":
        q = _unit(q)
    best = np.full(len(q), -np.inf, np.float32)  # the best score (larger: nearer)
    arg = np.full(len(q), -1, np.int64)
    rows = int(max(64, min(REFERENCE_BLOCK, block_bytes // (4 * 2 * max(len(q), 1)))))
    step = int(max(1, block_bytes // (4 * 2 * rows)))  # queries per block: scores and one temporary
    for start, c in row_chunks(a, rows):
        c = np.asarray(c, np.float32)
        if metric == "cosine":
            c = _unit(c)
        else:
            half = 0.5 * np.einsum("ij,ij->i", c, c)
        for s in range(0, len(q), step):
            sc = q[s : s + step] @ c.T
            if metric != "cosine":
                sc -= half  # q.c - |c|^2 / 2: larger is nearer, as -|q - c|^2 / 2 less a constant per row
            j = np.argmax(sc, axis=1)
            sj = sc[np.arange(len(j)), j]
            better = sj > best[s : s + step]  # ties keep the earlier row
            idx = np.flatnonzero(better) + s
            best[idx], arg[idx] = sj[better], j[better] + start
    out = np.full(len(q), np.inf)
    found = np.flatnonzero(arg >= 0)
    if len(found):  # the winners' distances, in float64 from the rows themselves
        out[found] = nearest_among(np.asarray(b)[found], a, arg[found, None], 1, metric)[1][:, 0]
    return arg, np.clip(out, 0, None)
