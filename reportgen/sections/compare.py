"""Model comparison: CKA and mutual-kNN heatmaps, shared frames, neighbourhood diffs, per-class changes."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..analyses.compare import DIFF_K, Comparison
from ..figures import frame_scatter, matrix_heatmap
from ..reducers.base import REDUCERS
from ..results import slug
from .base import Section
from .view import View


class CompareModelsSection(Section):
    name = "compare_models"
    template = "sections/compare.html"

    def context(self, comp: Comparison, view: View) -> dict[str, Any] | None:
        names = view.class_names
        ctx: dict[str, Any] = {
            "reference": comp.reference,
            "notes": list(comp.notes),
            "frames": [],
            "changes": [],
            "n": len(view.labels),
        }
        t = comp.cka_stats
        ctx["cka"] = view.figure(
            "compare--cka",
            lambda: matrix_heatmap(comp.cka, list(comp.names), label="debiased CKA"),
            data=(comp.cka,),
            alt="Debiased linear CKA between layers",
            caption=(
                "Debiased linear CKA (unbiased HSIC) between every pair of layers across the models, on the same "
                "samples: 1 means the two layers hold the same information up to rotation and scale, about 0 that "
                "they are unrelated (the usual, biased estimator reads two unrelated 1,280-d representations of "
                "1,000 samples as 0.56). Read the diagonal blocks for one model's layers, the off-diagonal blocks "
                "for how two models' layers correspond."
            ),
        )
        pairs = []
        if t is not None:
            for i in range(len(comp.names)):
                for j in range(i + 1, len(comp.names)):
                    pairs.append(
                        {
                            "a": comp.names[i],
                            "b": comp.names[j],
                            "biased": float(t.biased[i, j]),
                            "debiased": float(t.debiased[i, j]),
                            "low": float(t.low[i, j]),
                            "high": float(t.high[i, j]),
                            "p": float(t.p[i, j]),
                        }
                    )
        ctx["cka_pairs"] = pairs
        ctx["cka_how"] = (
            f"p: the pairing of samples shuffled {t.permutations} times; interval: {t.bootstraps} bootstrap "
            f"resamples; both on a seeded subsample of {t.subsample:,} samples"
            if t is not None
            else ""
        )
        for f in comp.frames:
            title = REDUCERS[f.method].title if f.method in REDUCERS else f.method
            fig = view.figure(
                f"compare--{slug(f.layer)}-{f.method}",
                partial(frame_scatter, f.coords, view.labels, names, view.colours, seed=view.seed),
                data=tuple(f.coords.values()),
                alt=f"{title} of {f.layer} in one frame",
                caption=(
                    f"{title} fitted on {comp.reference} and applied to the other models: the panels share axes, so a "
                    "class that moves between panels moved in the embedding space."
                ),
            )
            ctx["frames"].append({"layer": f.layer, "method": f.method, "title": title, "fig": fig})
        if comp.mutual_knn is not None:
            ctx["mutual"] = view.figure(
                "compare--mutual-knn",
                partial(matrix_heatmap, comp.mutual_knn, list(comp.names), label="mutual kNN"),
                data=(comp.mutual_knn,),
                alt="Mutual nearest-neighbour alignment between layers",
                caption=(
                    "Mutual kNN alignment (0 to 1) between every pair of layers: the mean share of each sample's "
                    f"{DIFF_K} nearest neighbours the two layers agree on. Unlike CKA it reads only local structure."
                ),
            )
        else:
            ctx["mutual"] = None
        ctx["diffs"] = []
        for d in comp.diffs:
            ctx["diffs"].append(
                {
                    "model": d.model,
                    "layer": d.layer,
                    "anchor": f"{slug(d.model)}-{slug(d.layer)}",
                    "names": view.names("compare_models", f"diff/{d.model}/{d.layer}"),
                    "overlap": d.mean_overlap,
                    "moved": d.moved,
                    "k": d.k,
                    "grown": [
                        {"a": names[c], "b": names[c2], "before": bef, "after": aft}
                        for c, c2, bef, aft in d.confusion_growth
                    ],
                    "changed": [
                        {
                            "query": view.sample(r, overlap=float(d.overlap[r])),
                            "before": [view.sample(j) for j in bef],
                            "after": [view.sample(j) for j in aft],
                        }
                        for r, bef, aft in zip(d.most_changed, d.before, d.after)
                    ],
                }
            )
        for ch in comp.changes:
            rows = []
            for c, n in enumerate(names):
                a, b = ch.knn_reference[c], ch.knn_other[c]
                rows.append(
                    {
                        "name": n,
                        "colour": view.colour(c),
                        "ref": None if np.isnan(a) else float(a),
                        "other": None if np.isnan(b) else float(b),
                        "delta": None if np.isnan(a) or np.isnan(b) else float(b - a),
                        "shift": None
                        if ch.centroid_shift is None or not np.isfinite(ch.centroid_shift[c])
                        else float(ch.centroid_shift[c]),
                    }
                )
            rows.sort(key=lambda r: (r["delta"] is None, r["delta"] if r["delta"] is not None else 0))
            ctx["changes"].append(
                {"model": ch.model, "layer": ch.layer, "rows": rows[:60], "more": max(0, len(rows) - 60)}
            )
        return ctx
