"""Numeric kernels of the analyses: pure functions of arrays (no I/O, no model, no plotting).

Each is checked against an independent computation in tests/test_kernels.py. The analyses in
``reportgen.analyses`` call them; one neighbour graph per layer serves every kNN-based kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..images import to_rgb_uint8
from ..streaming import gather_rows, row_chunks
from .neighbours import NeighbourGraph
from .pca import PcaResult

STAT_NAMES = ("brightness", "contrast", "saturation", "colour balance (R-B)")


@dataclass(frozen=True)
class ComponentEnds:
    component: int  # 0-based
    low: np.ndarray  # sample rows, lowest score first
    high: np.ndarray  # sample rows, highest score first


@dataclass(frozen=True)
class HardSample:
    row: int
    label: int
    majority: int
    agreement: float  # share of the k neighbours with the sample's own label


@dataclass(frozen=True)
class AxisFinding:
    class_a: str
    class_b: str
    t: np.ndarray  # (N,) position along centroid(a) -> centroid(b): 0 at a, 1 at b
    strip: np.ndarray  # rows, ordered along the axis
    separation: float  # fraction of a and b samples on their own side of 0.5


def knn_predict(graph: NeighbourGraph, labels: np.ndarray, k: int) -> np.ndarray:
    """Majority label of each sample's k neighbours; ties go to the class of the nearest tied neighbour."""
    nb = labels[graph.indices[:, :k]]
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(labels), n_classes), np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(labels)), nb.shape[1]), nb.ravel()), 1)
    best = counts.max(axis=1, keepdims=True)
    tied = counts == best
    pred = np.empty(len(labels), np.int64)
    for i in range(len(labels)):
        for lab in nb[i]:
            if tied[i, lab]:
                pred[i] = lab
                break
    return pred


def knn_accuracy(graph: NeighbourGraph, labels: np.ndarray, k: int) -> float:
    """Leave-one-out kNN accuracy: each sample classified by its k neighbours (itself excluded)."""
    return float((knn_predict(graph, labels, k) == labels).mean())


def hard_samples(graph: NeighbourGraph, labels: np.ndarray, k: int, count: int) -> list[HardSample]:
    nb = labels[graph.indices[:, :k]]
    agree = (nb == labels[:, None]).mean(axis=1)
    pred = knn_predict(graph, labels, k)
    order = np.lexsort((graph.distances[:, 0], agree))  # lowest agreement first
    out = [HardSample(int(r), int(labels[r]), int(pred[r]), float(agree[r])) for r in order if agree[r] < 0.5]
    return out[:count]


def outliers(graph: NeighbourGraph, k: int, count: int) -> np.ndarray:
    """Rows with the largest distance to their k-th neighbour."""
    kth = graph.distances[:, min(k, graph.distances.shape[1]) - 1]
    return np.argsort(-kth, kind="stable")[:count]


#: An outlier is also this many times as far from its k-th neighbour as its neighbours are from theirs.
LOCAL_RATIO = 2.0


def isolated(graph: NeighbourGraph, k: int) -> tuple[np.ndarray, float]:
    """Rows far from the rest twice over, most isolated first, and the global cut: a k-th neighbour
    distance beyond Q3 + 3 IQR of the set's (far from the data) and over LOCAL_RATIO times the median
    of its k neighbours' own (far for its neighbourhood too, as in LOF: the sparse end of a sparse
    class is sparse with its neighbours and is not flagged; a vector off the data's manifold is)."""
    k = min(k, graph.k)
    kth = graph.distances[:, k - 1]
    q1, q3 = np.quantile(kth, [0.25, 0.75])
    cut = float(q3 + 3 * (q3 - q1))
    far = np.flatnonzero(kth > cut)
    local = np.median(kth[graph.indices[far, :k]], axis=1) if len(far) else np.zeros(0)
    rows = far[kth[far] > LOCAL_RATIO * local]
    return rows[np.argsort(-kth[rows], kind="stable")], cut


def component_ends(pca: PcaResult, *, components: int, size: int) -> list[ComponentEnds]:
    """The ``size`` samples at each end of each of the first ``components`` components."""
    out = []
    for c in range(min(components, pca.k)):
        order = np.argsort(pca.scores[:, c], kind="stable")
        out.append(ComponentEnds(c, order[:size], order[::-1][:size]))
    return out


def eta_squared(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correlation ratio per column: between-class sum of squares / total sum of squares."""
    scores = np.asarray(scores, np.float64)
    total = ((scores - scores.mean(0)) ** 2).sum(0)
    between = np.zeros(scores.shape[1])
    grand = scores.mean(0)
    for c in np.unique(labels):
        m = labels == c
        between += m.sum() * (scores[m].mean(0) - grand) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, between / np.where(total > 0, total, 1), 0.0)


def class_means(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, k) class mean of each component score, in units of the component's std (NaN: no samples)."""
    sd = scores.std(0)
    sd = np.where(sd > 0, sd, 1)
    out = np.full((n_classes, scores.shape[1]), np.nan)
    for c in range(n_classes):
        m = labels == c
        if m.any():
            out[c] = (scores[m].mean(0) - scores.mean(0)) / sd
    return out


def image_statistics(thumbnails: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """(N, 4): brightness, contrast (grey std), saturation (HSV S), colour balance (mean R - mean B).
    Thumbnails made on demand from an image array are measured on the array itself (no thumbnails)."""
    n = len(thumbnails)
    out = np.zeros((n, 4))
    source = getattr(thumbnails, "array", None)
    for s in range(0, n, chunk):
        if source is not None:
            raw = gather_rows(source, thumbnails.rows[s : s + chunk])  # type: ignore[attr-defined]
            if raw.dtype == np.uint8 and (raw.ndim == 3 or raw.shape[3] == 1):
                out[s : s + chunk, :2] = _grey_statistics(raw.reshape(len(raw), -1))
                continue  # grey: no saturation, no colour balance
            rgb = raw.dtype == np.uint8 and raw.ndim == 4 and raw.shape[3] == 3  # as is: no call per image
            t = raw if rgb else np.stack([to_rgb_uint8(im) for im in raw])
        else:
            t = np.asarray(thumbnails[s : s + chunk])
        out[s : s + chunk] = _colour_statistics(t.reshape(len(t), -1, 3))
    return out


def _colour_statistics(x: np.ndarray) -> np.ndarray:
    """(B, 4) ``image_statistics`` of (B, P, 3) RGB uint8 pixels, on the uint8 channel planes: the
    maximum, minimum and channel sums in 8 bits, floats only for the luma and the saturation (all
    three channels as floats, reduced along an axis of 3, took 15x as long)."""
    r, g, b = np.ascontiguousarray(x.transpose(2, 0, 1))
    grey = r.astype(np.float32) * np.float32(0.299 / 255) + g.astype(np.float32) * np.float32(0.587 / 255)
    grey += b.astype(np.float32) * np.float32(0.114 / 255)
    mx = np.maximum(np.maximum(r, g), b)
    spread = (mx - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        sat = np.where(mx > 0, spread / mx, np.float32(0))
    balance = (r.sum(1, dtype=np.int64) - b.sum(1, dtype=np.int64)) / (255.0 * x.shape[1])
    return np.stack([grey.mean(1), grey.std(1), sat.mean(1), balance], axis=1)


def _grey_statistics(flat: np.ndarray) -> np.ndarray:
    """(B, 2) brightness and contrast of (B, P) grey uint8 pixels: their mean and std (the luma
    weights sum to 1), without making three float channels (a million 28-pixel images: 84 -> 8 s)."""
    g = flat.astype(np.float32) / 255.0
    return np.stack([g.mean(1), g.std(1)], axis=1)


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every column of a (N, p) and of b (N, q) -> (p, q); 0 where a column is constant."""
    a = np.asarray(a, np.float64) - np.mean(a, 0)
    b = np.asarray(b, np.float64) - np.mean(b, 0)
    na, nb = np.sqrt((a**2).sum(0)), np.sqrt((b**2).sum(0))
    denom = np.outer(na, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (a.T @ b) / np.where(denom > 0, denom, 1), 0.0)
    return np.clip(r, -1, 1)


def class_centroids(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, d) float64 mean of each class's rows (NaN for an empty class), in one streamed pass."""
    sums = np.zeros((n_classes, x.shape[1]))
    for s, c in row_chunks(x):
        lab = labels[s : s + len(c)]
        for k in np.unique(lab):
            sums[k] += np.asarray(c[lab == k], np.float64).sum(0)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def neighbour_queries(
    graph: NeighbourGraph,
    labels: np.ndarray,
    x: np.ndarray,
    hard: list[HardSample],
    *,
    n_classes: int,
    extra: int = 3,
    max_classes: int | None = None,
) -> tuple[list[int], int]:
    """One typical sample per class (nearest its class centroid; the lowest row on ties), then the
    hardest samples; and how many classes had a typical sample. With more than ``max_classes``
    classes, only the typical samples whose graph neighbours agree least with their label (the
    share of the same class; ties to the lower class), in class order: a table of a thousand
    classes' rows is neither read nor small. Streamed: the layer is read twice in chunks, never
    copied whole."""
    cent = class_centroids(x, labels, n_classes)
    dist = np.empty(len(x))
    for s, c in row_chunks(x):
        lab = labels[s : s + len(c)]
        dist[s : s + len(c)] = ((np.asarray(c, np.float64) - cent[lab]) ** 2).sum(1)
    order = np.lexsort((np.arange(len(x)), dist, labels))
    first = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    typical = order[first]
    if max_classes is not None and len(typical) > max_classes:
        agree = (labels[graph.indices[typical]] == labels[typical][:, None]).mean(1)
        typical = typical[np.sort(np.argsort(agree, kind="stable")[:max_classes])]  # in class order
    rows = [int(r) for r in typical]
    for h in hard[:extra]:
        if h.row not in rows:
            rows.append(h.row)
    return rows, len(first)


def centroid_axis(
    x: np.ndarray, labels: np.ndarray, class_names: Sequence[str], a: str, b: str, *, strip: int = 16
) -> AxisFinding:
    ia, ib = class_names.index(a), class_names.index(b)
    cent = class_centroids(x, labels, len(class_names))
    ca, cb = cent[ia], cent[ib]
    v = cb - ca
    vv = float(v @ v)
    t = np.zeros(len(x))
    if vv > 0:
        for s, c in row_chunks(x):
            t[s : s + len(c)] = (np.asarray(c, np.float64) - ca) @ v / vv
    pair = np.flatnonzero((labels == ia) | (labels == ib))
    order = pair[np.argsort(t[pair], kind="stable")]
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(strip, len(order))).round().astype(int))]
    own = np.concatenate([t[labels == ia] < 0.5, t[labels == ib] >= 0.5])
    return AxisFinding(a, b, t, picks, float(own.mean()) if len(own) else 0.0)


def sample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """All row indices, or a seeded sorted subset of ``cap`` of them: the stated sample cap of the
    O(N^2) and model-fitting analyses."""
    return np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _ranked(z: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Every row's other samples in ascending distance (self last), and rank[i, j] = position of j (1-based)."""
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(z, metric=metric)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    rank = np.empty_like(order, dtype=np.int32)
    rows = np.arange(len(z))[:, None]
    rank[rows, order] = np.arange(1, len(z) + 1, dtype=np.int32)[None, :]
    return order, rank


def _penalty(rank: np.ndarray, knn: np.ndarray, k: int) -> float:
    n = len(rank)
    r = np.take_along_axis(rank, knn, axis=1).astype(np.int64) - k
    return 1.0 - float(r[r > 0].sum()) * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))


def trust_and_continuity(
    x: np.ndarray,
    maps: dict[str, np.ndarray],
    *,
    k: int = 10,
    cap: int = 3000,
    seed: int = 0,
    metric: str = "euclidean",
    among: np.ndarray | None = None,
) -> dict[str, tuple[float, float, int]]:
    """Trustworthiness (are map neighbours true neighbours?) and continuity (are true neighbours kept
    on the map?) of every map of one layer, on the same ``cap`` samples, as scikit-learn defines them.

    The layer's distances are ranked once for all maps (the costly part); each map adds one ranking
    of its 2-D distances. Returns {map: (trustworthiness, continuity, samples)}.
    """
    rows = sample_rows(len(x), cap, seed) if among is None else among[sample_rows(len(among), cap, seed)]
    n = len(rows)
    k = int(min(k, max(1, n // 2 - 1)))
    order_x, rank_x = _ranked(np.asarray(gather_rows(x, rows), np.float64), metric)
    knn_x = order_x[:, :k]
    del order_x
    out = {}
    for name, y in maps.items():
        order_y, rank_y = _ranked(np.asarray(y[rows], np.float64), "euclidean")
        out[name] = (_penalty(rank_x, order_y[:, :k], k), _penalty(rank_y, knn_x, k), n)
    return out


def linear_probe_accuracy(
    x: np.ndarray, labels: np.ndarray, *, folds: int = 5, cap: int = 5000, seed: int = 0
) -> tuple[float | None, int]:
    """Mean accuracy of a logistic regression (standardised inputs) over stratified k folds.

    At most ``cap`` samples (a seeded stratified subset); None when a class has fewer samples than folds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = sample_rows(len(x), cap, seed)
    y = labels[rows]
    counts = np.bincount(y)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2 or (counts > 0).sum() < 2:
        return None, len(rows)
    import warnings

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the probe is a measurement, not a model to ship
        scores = cross_val_score(
            model, np.asarray(x[rows], np.float64), y, cv=StratifiedKFold(k, shuffle=True, random_state=seed)
        )
    return float(scores.mean()), len(rows)


def silhouette(
    x: np.ndarray, labels: np.ndarray, *, cap: int = 3000, seed: int = 0, metric: str = "cosine"
) -> tuple[float | None, int]:
    """Mean silhouette of the class labels (-1..1) on at most ``cap`` samples."""
    from sklearn.metrics import silhouette_score

    rows = sample_rows(len(x), cap, seed)
    y = labels[rows]
    if len(np.unique(y)) < 2 or len(np.unique(y)) >= len(rows):
        return None, len(rows)
    xr = np.asarray(x[rows], np.float64)
    if metric == "cosine" and not np.any(np.linalg.norm(xr, axis=1) > 0):
        return None, len(rows)
    with np.errstate(all="ignore"):
        value = silhouette_score(xr, y, metric=metric)
    return (None if not np.isfinite(value) else float(value)), len(rows)


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        m = labels == c
        if m.any():
            out[c] = float((pred[m] == c).mean())
    return out


def _subsample(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows] as float64, in ``rows``' order, reading only those rows (a memory-mapped million
    is not converted whole first)."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + np.shape(x)[1:], np.float64)
    out[order] = np.asarray(x[rows[order]], np.float64)
    return out


def mmd_permutation_test(
    a: np.ndarray, b: np.ndarray, *, cap: int = 400, permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-distance bandwidth) and a permutation p-value."""
    rng = np.random.default_rng(seed)
    a = _subsample(a, rng.permutation(len(a))[:cap])
    b = _subsample(b, rng.permutation(len(b))[:cap])
    z = np.concatenate([a, b])
    sq = (z**2).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0, None)
    med = np.median(d2[np.triu_indices(len(z), 1)])
    k = np.exp(-d2 / (med if med > 0 else 1.0))
    na = len(a)

    def stat(idx: np.ndarray) -> float:
        ia, ib = idx[:na], idx[na:]
        kaa, kbb, kab = k[np.ix_(ia, ia)], k[np.ix_(ib, ib)], k[np.ix_(ia, ib)]
        m, n = len(ia), len(ib)
        return float(
            (kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean()
        )

    observed = stat(np.arange(len(z)))
    exceed = sum(stat(rng.permutation(len(z))) >= observed for _ in range(permutations))
    return observed, (1 + exceed) / (1 + permutations)


def domain_auc(a: np.ndarray, b: np.ndarray, *, cap: int = 2000, seed: int = 0) -> float | None:
    """ROC AUC of a logistic regression telling the two datasets apart (5-fold); 0.5 = indistinguishable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    a = _subsample(a, rng.permutation(len(a))[:cap])
    b = _subsample(b, rng.permutation(len(b))[:cap])
    if min(len(a), len(b)) < 5:
        return None
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
            x,
            y,
            scoring="roc_auc",
            cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        )
    return float(s.mean())
