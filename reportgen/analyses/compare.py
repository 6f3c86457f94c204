"""Model comparison (several models or checkpoints on the same samples): linear CKA between every
pair of layers, each layer's maps in one frame (fitted on the reference, applied to the others:
3LC's fit-once-apply-to-others), and per class the change in kNN accuracy and centroid position."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..figures import frame_scatter, matrix_heatmap
from ..kernels import linear_cka, per_class_accuracy
from ..reducers import REDUCERS
from ..results import Finding, Samples, slug
from .base import BuildAnalysis, BuildInput


@dataclass(frozen=True, eq=False)
class SharedFrame:
    layer: str
    method: str
    reference: str
    coords: dict[str, np.ndarray]  # model -> (N, 2), the reference's own fitted coordinates first


@dataclass(frozen=True, eq=False)
class ClassChange:
    model: str
    layer: str
    knn_reference: np.ndarray  # (C,) per-class kNN accuracy of the reference
    knn_other: np.ndarray
    centroid_shift: np.ndarray | None  # (C,) centroid distance in the reference PCA frame / mean reference centroid spread


@dataclass(frozen=True, eq=False)
class Comparison(Finding):
    reference: str
    names: tuple[str, ...]  # "model · layer" for every CKA row/column
    cka: np.ndarray
    frames: tuple[SharedFrame, ...] = ()
    changes: tuple[ClassChange, ...] = ()
    notes: tuple[str, ...] = field(default=())


class CompareModels(BuildAnalysis):
    name = "compare_models"
    title = "Model comparison"
    template = "sections/compare.html"
    code = ("reportgen.kernels", "reportgen.figures")

    def enabled(self, spec) -> bool:
        return len(spec.models) > 1

    def run(self, b: BuildInput) -> Comparison | None:
        if len(b.runs) < 2:
            return None
        labels, n_classes = b.samples.labels, len(b.samples.class_names)
        keys = [(r.model.name, layer) for r in b.runs for layer in r.embeddings.layers]
        names = tuple(f"{m} · {l}" for m, l in keys)
        k = len(keys)
        cka = np.eye(k)
        for i in range(k):
            for j in range(i + 1, k):
                cka[i, j] = cka[j, i] = linear_cka(b.x(*keys[i]), b.x(*keys[j]))
        frames: dict[tuple[str, str], SharedFrame] = {}
        changes, notes = [], []
        ref = b.reference
        for run in b.runs:
            other = run.model.name
            if other == ref:
                continue
            for layer in run.embeddings.layers:
                base = b.layers.get((ref, layer))
                if base is None:
                    continue
                mine = b.layers[(other, layer)]
                ref_acc = per_class_accuracy(base["metrics"].knn_pred, labels, n_classes)
                oth_acc = per_class_accuracy(mine["metrics"].knn_pred, labels, n_classes)
                shift = None
                if base.dim == mine.dim:
                    x_other = b.x(other, layer)
                    p = b.pca[(ref, layer)]
                    oth_scores = p.transform(x_other)
                    cent_ref = np.stack([p.scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan) for c in range(n_classes)])
                    cent_oth = np.stack([oth_scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan) for c in range(n_classes)])
                    spread = np.nanmean(np.linalg.norm(cent_ref - np.nanmean(cent_ref, 0), axis=1))
                    shift = np.linalg.norm(cent_oth - cent_ref, axis=1) / (spread if spread > 0 else 1.0)
                    for method, fitted in b.fitted.get((ref, layer), {}).items():
                        if not fitted.can_transform:
                            continue
                        try:
                            moved = fitted.transform(x_other)
                        except Exception as exc:  # a library's transform can refuse (e.g. PaCMAP without a saved tree)
                            notes.append(f"{method} frame of {layer}: could not place {other} ({type(exc).__name__}: {exc})")
                            continue
                        frame = frames.setdefault((layer, method), SharedFrame(layer, method, ref, {ref: base.maps[method].coords}))
                        frame.coords[other] = moved
                else:
                    notes.append(f"{other} · {layer} has {mine.dim} dimensions, the reference {base.dim}: no shared frame (CKA and per-class kNN still compare them).")
                changes.append(ClassChange(other, layer, ref_acc, oth_acc, shift))
        return Comparison(ref, names, cka, tuple(frames.values()), tuple(changes), tuple(notes))

    def summary(self, comp: Comparison, samples: Samples) -> dict:
        names = samples.class_names
        return {"comparison": {
            "reference": comp.reference,
            "cka": {"names": list(comp.names), "matrix": [[float(v) for v in row] for row in comp.cka]},
            "frames": [{"layer": f.layer, "method": f.method, "models": list(f.coords)} for f in comp.frames],
            "changes": [{
                "model": ch.model, "layer": ch.layer,
                "per_class": {names[c]: {"knn_reference": _f(ch.knn_reference[c]), "knn": _f(ch.knn_other[c]),
                                          "centroid_shift": None if ch.centroid_shift is None else _f(ch.centroid_shift[c])} for c in range(len(names))},
            } for ch in comp.changes],
            "notes": list(comp.notes),
        }}

    def context(self, comp: Comparison, view) -> dict:
        names = view.class_names
        ctx = {"reference": comp.reference, "notes": list(comp.notes), "frames": [], "changes": [], "n": len(view.labels)}
        ctx["cka"] = view.figure("compare--cka", lambda: matrix_heatmap(comp.cka, list(comp.names)), data=(comp.cka,), alt="Linear CKA between layers",
                                 caption="Linear CKA (0 to 1) between every pair of layers across the models, on the same samples: 1 means the two layers hold the same information up to rotation and scale. Read the diagonal blocks for one model's layers, the off-diagonal blocks for how two models' layers correspond.")
        for f in comp.frames:
            title = REDUCERS[f.method].title if f.method in REDUCERS else f.method
            fig = view.figure(f"compare--{slug(f.layer)}-{f.method}", lambda f=f: frame_scatter(f.coords, view.labels, names, view.colours, seed=view.seed),
                              data=tuple(f.coords.values()), alt=f"{title} of {f.layer} in one frame",
                              caption=f"{title} fitted on {comp.reference} and applied to the other models: the panels share axes, so a class that moves between panels moved in the embedding space.")
            ctx["frames"].append({"layer": f.layer, "method": f.method, "title": title, "fig": fig})
        for ch in comp.changes:
            rows = []
            for c, n in enumerate(names):
                a, b = ch.knn_reference[c], ch.knn_other[c]
                rows.append({"name": n, "colour": view.colour(c), "ref": None if np.isnan(a) else float(a), "other": None if np.isnan(b) else float(b),
                             "delta": None if np.isnan(a) or np.isnan(b) else float(b - a),
                             "shift": None if ch.centroid_shift is None or not np.isfinite(ch.centroid_shift[c]) else float(ch.centroid_shift[c])})
            rows.sort(key=lambda r: (r["delta"] is None, r["delta"] if r["delta"] is not None else 0))
            ctx["changes"].append({"model": ch.model, "layer": ch.layer, "rows": rows[:60], "more": max(0, len(rows) - 60)})
        return ctx


def _f(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
