"""The model's second opinion on twins: where the pictures alone cannot tell a copy from a
look-alike (the calibration found crowds that close, ``Calibration.look_alike``), a pair stands
only if its two images are each other's nearest in the layer - a copy sits on its original there; a
look-alike is one neighbour among several (Lowe's ratio test, in the model's space).
"""

from __future__ import annotations

import numpy as np

#: A near pair's embeddings must be at most this share of the distance from either image to its next
#: neighbour in the layer (``embedding_ratio``; 1: the two are each other's nearest image there):
#: where images alone cannot tell a copy from a look-alike, the model's view can. On 4,000
#: Fashion-MNIST images at 96 px it removed every false pair (6 of 35, ratios 1.1-2.6) and 6 of 29
#: true ones (a JPEG 50 or a resampling that moved the embedding); docs/benchmarks.md.
EMBED_RATIO = 1.0
#: A leak (across data sets) whose image difference is within this share of the threshold stands
#: without the model's opinion: across splits the pictures are conclusive that close.
LEAK_SURE = 0.5


def embedding_ratio(
    x: np.ndarray,
    pairs: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    metric: str,
    hashes: np.ndarray | None = None,
) -> np.ndarray:
    """For each pair (i, j): the distance between their embeddings over the distance from either
    to its nearest *other* image in the layer (the larger of the two ratios) - Lowe's ratio test in
    the model's space. A copy sits on its original, far closer than any other image; a look-alike
    is one neighbour among several. ``indices``/``distances``: the layer's neighbour graph; its
    neighbours with the same content hash as i or j (exact copies) do not count as others.
    NaN where no other neighbour is known (the pair is not judged)."""
    if not len(pairs):
        return np.zeros(0)
    a, b = pairs[:, 0], pairs[:, 1]
    xa, xb = np.asarray(x[a], np.float64), np.asarray(x[b], np.float64)
    if metric == "cosine":
        na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
        e = 1.0 - (xa * xb).sum(1) / np.maximum(na * nb, 1e-12)
    else:
        e = np.linalg.norm(xa - xb, axis=1)
    e = np.maximum(e, 0.0)

    def nearest_other(rows: np.ndarray, partner: np.ndarray) -> np.ndarray:
        nb_rows, nb_d = indices[rows], distances[rows]
        other = (nb_rows >= 0) & (nb_rows != partner[:, None]) & (nb_rows != rows[:, None])
        if hashes is not None:
            h = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.shape[1]))).ravel()
            hn = h[np.where(nb_rows >= 0, nb_rows, 0)]
            other &= (hn != h[rows][:, None]) & (hn != h[partner][:, None])
        d = np.where(other, nb_d, np.inf)
        return d.min(axis=1)

    da, db = nearest_other(a, b), nearest_other(b, a)
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.where(da > 0, e / da, np.where(e > 0, np.inf, 0.0))
        rb = np.where(db > 0, e / db, np.where(e > 0, np.inf, 0.0))
    r = np.maximum(ra, rb)
    return np.where(np.isfinite(da) & np.isfinite(db), r, np.nan)


def cross_embedding_ratio(
    x_other: np.ndarray,
    x_ref: np.ndarray,
    rows: np.ndarray,
    twins: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    metric: str,
    hashes: np.ndarray | None = None,
) -> np.ndarray:
    """``embedding_ratio`` across data sets: the embedding distance of each compared image
    (``rows`` of ``x_other``) to its twin in the reference (``twins``) over the twin's distance to
    its nearest other reference image (the reference's graph; its exact copies do not count).
    NaN where none is known."""
    if not len(rows):
        return np.zeros(0)
    xa, xb = np.asarray(x_other[rows], np.float64), np.asarray(x_ref[np.asarray(twins)], np.float64)
    if metric == "cosine":
        na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
        e = 1.0 - (xa * xb).sum(1) / np.maximum(na * nb, 1e-12)
    else:
        e = np.linalg.norm(xa - xb, axis=1)
    e = np.maximum(e, 0.0)
    t = np.asarray(twins)
    nb_rows, nb_d = indices[t], distances[t]
    other = (nb_rows >= 0) & (nb_rows != t[:, None])
    if hashes is not None:
        h = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.shape[1]))).ravel()
        other &= h[np.where(nb_rows >= 0, nb_rows, 0)] != h[t][:, None]
    d = np.where(other, nb_d, np.inf).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d > 0, e / d, np.where(e > 0, np.inf, 0.0))
    return np.where(np.isfinite(d), r, np.nan)
