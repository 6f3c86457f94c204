"""Summary: findings -> the plain dict written as summary.json (every number the report shows).

Deterministic: two builds of one spec give byte-identical JSON. Run-specific facts (timings,
cache hits) are not here; they go to run.json.
"""
from __future__ import annotations

import numpy as np

from . import __version__
from .analyse import STAT_NAMES

#: One sentence per metric, shown in the report and used by checks.
METRICS = {
    "knn_accuracy": "Leave-one-out kNN accuracy: the share of samples whose k nearest neighbours (itself excluded) mostly carry its label.",
    "linear_probe_accuracy": "Linear-probe accuracy: a logistic regression on the standardised embeddings, mean over stratified 5-fold cross-validation.",
    "silhouette": "Silhouette of the class labels (-1 to 1): how much closer samples are to their own class than to the nearest other class.",
    "components_for_90": "Effective dimensionality: principal components needed for 90 % of the variance.",
    "participation_ratio": "Participation ratio (sum of eigenvalues)^2 / sum of squared eigenvalues: the effective number of dimensions.",
    "variance_top10": "Share of the variance held by the first 10 principal components.",
    "trustworthiness": "Trustworthiness of a 2-D map (0 to 1): 1 when every neighbour in the map is also a neighbour in the embedding space.",
    "continuity": "Continuity of a 2-D map (0 to 1): 1 when every neighbour in the embedding space stays a neighbour in the map.",
}


def components_for(pca, share: float) -> int:
    if pca.total_variance <= 0:
        return 0
    cum = np.cumsum(pca.eigenvalues) / pca.total_variance
    return int(min(len(cum), np.searchsorted(cum, share - 1e-12) + 1))


def layer_metrics(lr) -> dict:
    p = lr.pca
    out = {
        "knn_accuracy": lr.knn_accuracy, "knn_k": lr.knn_k, "metric": lr.graph.metric,
        "linear_probe_accuracy": lr.probe[0], "linear_probe_samples": lr.probe[1],
        "silhouette": lr.silhouette[0], "silhouette_samples": lr.silhouette[1],
        "components_for_90": components_for(p, 0.9), "participation_ratio": float(p.participation_ratio),
        "variance_top10": float(np.sum(p.eigenvalues[:10]) / p.total_variance) if p.total_variance > 0 else 0.0,
        "maps": {k: v for k, v in lr.trust.items()},
    }
    for name, t in lr.trust.items():
        out[f"trustworthiness_{name}"] = t["trustworthiness"]
        out[f"continuity_{name}"] = t["continuity"]
    return out


def summary_dict(res, *, html_bytes: int = 0, section_bytes: dict | None = None, reductions: list | None = None) -> dict:
    """Every number the report shows, deterministic: timings (and the bytes they take in the
    HTML) go to run.json, so two builds of one spec give byte-identical files."""
    names = list(res.dataset.class_names)
    ids = res.ids
    out = {
        "generator": "reportgen", "version": __version__, "title": res.spec.title, "seed": res.spec.seed,
        "dataset": {
            "name": res.dataset.name, "kind": res.dataset.kind, "fingerprint": res.dataset.fingerprint, "classes": names,
            "samples_used": len(ids), "selection": res.selection.method, "used_per_class": res.selection.used_per_class,
            "total_per_class": res.selection.total_per_class, "skipped": [{"id": i, "reason": r} for i, r in res.bad],
        },
        "models": [],
        "notes": list(res.notes),
        "html": {"bytes": html_bytes, "section_bytes": section_bytes or {}, "reductions": reductions or []},
    }
    for run in res.runs:
        m = {"name": run.model.name, "arch": run.model.arch, "source": run.model.source, "weights_sha256": run.model.weights_sha256,
             "preprocess": run.model.preprocess.as_dict(), "embeddings_key": run.stored.key, "layers": []}
        for lr in run.layers:
            p = lr.pca
            g = lr.graph
            met = layer_metrics(lr)
            m["layers"].append({
                "layer": lr.layer, "reshape": lr.reshape, "dim": lr.dim, "samples": len(ids), "nonfinite_rows": lr.nonfinite_rows, "notes": lr.notes,
                "pca": {
                    "mean_centred": True, "explained_variance_ratio": [float(v) for v in p.explained_variance_ratio],
                    "cumulative": [float(v) for v in np.cumsum(p.explained_variance_ratio)], "total_variance": float(p.total_variance),
                    "variance_top10": met["variance_top10"], "components_for_90": met["components_for_90"],
                    "participation_ratio": met["participation_ratio"],
                    "eta2": [float(v) for v in lr.eta2],
                    "class_means": {names[c]: [None if np.isnan(v) else float(v) for v in row] for c, row in enumerate(lr.class_means)},
                    "image_stat_correlation": {s: [float(v) for v in lr.stat_corr[i]] for i, s in enumerate(STAT_NAMES)},
                },
                "metrics": met,
                "extremes": [{"component": e.component + 1, "low": [ids[r] for r in e.low], "high": [ids[r] for r in e.high],
                              "low_scores": [float(p.scores[r, e.component]) for r in e.low], "high_scores": [float(p.scores[r, e.component]) for r in e.high]} for e in lr.ends],
                "neighbours": [{"query": ids[q], "neighbours": [ids[j] for j in g.indices[q, :res.spec.report.neighbours]],
                                "distances": [float(d) for d in g.distances[q, :res.spec.report.neighbours]]} for q in lr.queries],
                "hard_samples": [{"id": ids[h.row], "label": names[h.label], "majority": names[h.majority], "agreement": h.agreement} for h in lr.hard],
                "outliers": [ids[r] for r in lr.outliers],
                "axes": [{"a": a.class_a, "b": a.class_b, "separation": a.separation, "strip": [ids[r] for r in a.strip]} for a in lr.axes],
                "maps": {k: {"params": v.params, "notes": list(v.notes)} for k, v in lr.projections.items()},
            })
        out["models"].append(m)
    comp = getattr(res, "comparison", None)
    if comp is not None:
        out["comparison"] = {
            "reference": comp.reference,
            "cka": {"names": comp.names, "matrix": [[float(v) for v in row] for row in comp.cka]},
            "frames": [{"layer": f.layer, "method": f.method, "models": list(f.coords)} for f in comp.frames],
            "changes": [{
                "model": ch.model, "layer": ch.layer,
                "per_class": {names[c]: {"knn_reference": _f(ch.knn_reference[c]), "knn": _f(ch.knn_other[c]),
                                          "centroid_shift": None if ch.centroid_shift is None else _f(ch.centroid_shift[c])} for c in range(len(names))},
            } for ch in comp.changes],
            "notes": comp.notes,
        }
    shifts = getattr(res, "shifts", None)
    if shifts:
        out["dataset_shift"] = [{"dataset": d.dataset, "model": d.model, "layer": d.layer, "samples": d.n, "mmd2": d.mmd2,
                                 "p_value": d.p_value, "permutations": d.permutations, "domain_auc": d.auc} for d in shifts]
    return out


def _f(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


