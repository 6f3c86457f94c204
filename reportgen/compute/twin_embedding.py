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
#: A pair (of one data set, or a leak across two) whose image difference is within this share of
#: the threshold stands without the model's opinion: the pictures are conclusive that close. On
#: 10,000 Fashion-MNIST images with 20 copies of each edit family, the only unplanted pairs within
#: half the threshold were two photographs Fashion-MNIST holds twice (the next at 0.66 of it), and
#: 93 % of the copies found came within it.
SURE = 0.5


def _distance(xa: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distance of two stacks of embeddings, in the layer graph's metric."""
    xa, xb = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1)
        return np.maximum(1.0 - (xa * xb).sum(1) / np.maximum(norms, 1e-12), 0.0)
    return np.linalg.norm(xa - xb, axis=1)


def _nearest_other(
    rows: np.ndarray,
    partner: np.ndarray | None,
    indices: np.ndarray,
    distances: np.ndarray,
    hashes: np.ndarray | None,
) -> np.ndarray:
    """Each row's distance to its nearest graph neighbour that is neither the row, its partner,
    nor an exact copy (same content hash) of either; inf where none is known."""
    nb_rows, nb_d = indices[rows], distances[rows]
    other = (nb_rows >= 0) & (nb_rows != rows[:, None])
    if partner is not None:
        other &= nb_rows != partner[:, None]
    if hashes is not None:
        h = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.shape[1]))).ravel()
        hn = h[np.where(nb_rows >= 0, nb_rows, 0)]
        other &= hn != h[rows][:, None]
        if partner is not None:
            other &= hn != h[partner][:, None]
    return np.where(other, nb_d, np.inf).min(axis=1)


def _ratio(e: np.ndarray, d: np.ndarray) -> np.ndarray:
    """e / d, with 0 / 0 = 0 and e / 0 = inf; NaN where d is unknown (inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d > 0, e / d, np.where(e > 0, np.inf, 0.0))
    return np.where(np.isfinite(d), r, np.nan)


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
    e = _distance(x[a], x[b], metric)
    ra = _ratio(e, _nearest_other(a, b, indices, distances, hashes))
    rb = _ratio(e, _nearest_other(b, a, indices, distances, hashes))
    return np.maximum(ra, rb)  # NaN when either side is unknown


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
    t = np.asarray(twins)
    e = _distance(x_other[rows], x_ref[t], metric)
    return _ratio(e, _nearest_other(t, None, indices, distances, hashes))
