"""Compare models (or checkpoints) on the same samples: one shared frame, CKA, per-class change.

Reducers are fitted once, on the reference model (``fit_on``), and applied to the others, so
their maps share one frame (3LC's fit-once-apply-to-others). Linear CKA compares every pair of
layers across all models, whatever their dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .analyse import knn_predict, linear_cka, sanitize
from .reduce import transform_projection


@dataclass(frozen=True)
class SharedFrame:
    layer: str
    method: str
    reference: str
    coords: dict[str, np.ndarray]  # model -> (N, 2), the reference's own fitted coordinates first


@dataclass(frozen=True)
class ClassChange:
    model: str
    layer: str
    knn_reference: np.ndarray  # (C,) per-class kNN accuracy of the reference
    knn_other: np.ndarray
    centroid_shift: np.ndarray | None  # (C,) centroid distance in the reference PCA frame / mean reference centroid spread


@dataclass
class Comparison:
    reference: str
    names: list[str]  # "model · layer" for every CKA row/column
    cka: np.ndarray
    frames: list[SharedFrame] = field(default_factory=list)
    changes: list[ClassChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        m = labels == c
        if m.any():
            out[c] = float((pred[m] == c).mean())
    return out


def compare_models(runs, reference: str, labels: np.ndarray, n_classes: int, *, seed: int = 0, tsne_components: int = 0) -> Comparison:
    by_name = {r.model.name: r for r in runs}
    ref = by_name[reference]
    items = [(r.model.name, lr.layer, sanitize(r.stored.layers[lr.layer])[0]) for r in runs for lr in r.layers]
    names = [f"{m} · {l}" for m, l, _ in items]
    k = len(items)
    cka = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            cka[i, j] = cka[j, i] = linear_cka(items[i][2], items[j][2])
    comp = Comparison(reference=reference, names=names, cka=cka)
    ref_layers = {lr.layer: lr for lr in ref.layers}
    for other in runs:
        if other.model.name == reference:
            continue
        for lr in other.layers:
            base = ref_layers.get(lr.layer)
            if base is None:
                continue
            ref_acc = per_class_accuracy(knn_predict(base.graph, labels, base.knn_k), labels, n_classes)
            oth_acc = per_class_accuracy(knn_predict(lr.graph, labels, lr.knn_k), labels, n_classes)
            shift = None
            if base.dim == lr.dim and base.pca_full is not None:
                x_other = sanitize(other.stored.layers[lr.layer])[0]
                p = base.pca_full
                ref_scores = p.scores
                oth_scores = p.transform(x_other)
                cent_ref = np.stack([ref_scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan) for c in range(n_classes)])
                cent_oth = np.stack([oth_scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan) for c in range(n_classes)])
                spread = np.nanmean(np.linalg.norm(cent_ref - np.nanmean(cent_ref, 0), axis=1))
                shift = np.linalg.norm(cent_oth - cent_ref, axis=1) / (spread if spread > 0 else 1.0)
                for method, proj in base.projections.items():
                    if method != "pca" and proj.fitted is None:
                        continue
                    try:
                        tc = tsne_components if 0 < tsne_components < base.dim else 0
                        moved = transform_projection(proj, p, x_other, tsne_components=tc, seed=seed)
                    except Exception as exc:  # a library's transform can refuse (e.g. PaCMAP without saved tree)
                        comp.notes.append(f"{method} frame of {lr.layer}: could not place {other.model.name} ({type(exc).__name__}: {exc})")
                        continue
                    frame = next((f for f in comp.frames if f.layer == lr.layer and f.method == method), None)
                    if frame is None:
                        frame = SharedFrame(lr.layer, method, reference, {reference: proj.coords})
                        comp.frames.append(frame)
                    frame.coords[other.model.name] = moved.coords
            else:
                comp.notes.append(f"{other.model.name} · {lr.layer} has {lr.dim} dimensions, the reference {base.dim}: no shared frame (CKA and per-class kNN still compare them).")
            comp.changes.append(ClassChange(other.model.name, lr.layer, ref_acc, oth_acc, shift))
    return comp


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetShift:
    dataset: str
    model: str
    layer: str
    n: int
    mmd2: float
    p_value: float
    permutations: int
    auc: float | None
    coords: dict[str, np.ndarray]  # reducer -> (n, 2) in the reference dataset's fitted frame


def _rbf_kernel(x: np.ndarray, gamma: float) -> np.ndarray:
    sq = (x**2).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None)
    return np.exp(-gamma * d2)


def mmd_permutation_test(a: np.ndarray, b: np.ndarray, *, cap: int = 400, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with an RBF kernel (median-distance bandwidth) and a permutation p-value."""
    rng = np.random.default_rng(seed)
    a = np.asarray(a, np.float64)[rng.permutation(len(a))[:cap]]
    b = np.asarray(b, np.float64)[rng.permutation(len(b))[:cap]]
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
        return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean())

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
    a = np.asarray(a, np.float64)[rng.permutation(len(a))[:cap]]
    b = np.asarray(b, np.float64)[rng.permutation(len(b))[:cap]]
    if min(len(a), len(b)) < 5:
        return None
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)), x, y, scoring="roc_auc",
                            cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return float(s.mean())


def compare_datasets(runs, extra: list[tuple[str, list]], *, seed: int = 0, tsne_components: int = 0) -> list[DatasetShift]:
    """For each extra dataset (name, its runs), per model and layer: shift measures and placement in the reference frames."""
    out = []
    for name, xruns in extra:
        for run, xrun in zip(runs, xruns):
            for lr in run.layers:
                a = sanitize(run.stored.layers[lr.layer])[0]
                b = sanitize(xrun.stored.layers[lr.layer])[0]
                mmd2, p = mmd_permutation_test(a, b, seed=seed)
                coords = {}
                for method, proj in lr.projections.items():
                    if (method != "pca" and proj.fitted is None) or lr.pca_full is None:
                        continue
                    tc = tsne_components if 0 < tsne_components < lr.dim else 0
                    try:
                        coords[method] = transform_projection(proj, lr.pca_full, b, tsne_components=tc, seed=seed).coords
                    except Exception:  # a reducer that cannot transform: no overlay for it
                        continue
                out.append(DatasetShift(name, run.model.name, lr.layer, len(b), mmd2, p, 200, domain_auc(a, b, seed=seed), coords))
    return out
