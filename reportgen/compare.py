"""Compare models (or checkpoints) on the same samples: one shared frame, CKA, per-class change.

Reducers are fitted once, on the reference model (``fit_on``), and applied to the others, so
their maps share one frame (3LC's fit-once-apply-to-others). Linear CKA compares every pair of
layers across all models, whatever their dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .analyse import knn_predict, linear_cka, sanitize
from .reduce import Projection, transform_projection


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
