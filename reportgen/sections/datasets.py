"""Dataset comparison: the shift table, overlaid maps, leakage pairs."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..analyses.shift import ShiftFinding, leak_anchor
from ..figures import overlay_scatter
from ..reducers.base import REDUCERS
from ..results import NO_DIFFERENCE, difference, slug
from .base import Section
from .view import View


class CompareDatasetsSection(Section):
    name = "compare_datasets"
    template = "sections/datasets.html"

    def context(self, f: ShiftFinding, view: View) -> dict[str, Any] | None:
        rows = [
            {
                "dataset": d.dataset,
                "model": d.model,
                "layer": d.layer,
                "n": d.n,
                "mmd2": d.mmd2,
                "p": d.p_value,
                "perm": d.permutations,
                "auc": d.auc,
            }
            for d in f.shifts
        ]
        order = list(REDUCERS)
        keys = sorted(
            {(d.model, d.layer, m) for d in f.shifts for m in d.coords},
            key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else len(order)),
        )
        figs = []
        for model, layer, method in keys:
            ref = view.models_by_name[model].layer(layer).maps[method].coords
            others = {
                d.dataset: d.coords[method]
                for d in f.shifts
                if d.model == model and d.layer == layer and method in d.coords
            }
            title = REDUCERS[method].title if method in REDUCERS else method
            figs.append(
                view.figure(
                    f"datasets--{slug(model)}--{slug(layer)}-{method}",
                    partial(overlay_scatter, ref, others, reference_name=view.dataset_name, seed=view.seed),
                    data=(ref, *others.values()),
                    alt=f"{title} of {layer}: datasets overlaid",
                    caption=(
                        f"{model} · {layer}: {title} fitted on {view.dataset_name} (grey) with the other datasets "
                        "placed "
                        "in the same frame. Regions covered by one dataset only show where they differ."
                    ),
                )
            )
        leaks = []
        for l in f.leaks:
            anchor = leak_anchor(l)
            pairs = []
            shown = shown_leaks(l.exact, view.gallery_size * 2)
            for k in shown.tolist():
                th, y, i, t, d, e = l.thumbnails[k], l.labels[k], l.ids[k], l.twins[k], l.distances[k], l.exact[k]
                m = bool(l.is_mirrored[k])
                twin = view.sample(t)
                said = _leak_words(bool(e), float(d), m)
                line = {"text": f"{said} {twin['id']} in {view.dataset_name}", "href": twin["card"]}
                where = {
                    "text": f"leaked images of {l.dataset} ({l.model} · {l.layer})",
                    "href": f"#compare_datasets-{anchor}",
                }
                a = view.image(th, y, i, dataset=l.dataset, lines=(line, where))
                pairs.append({"a": a, "b": twin, "d": float(d), "exact": bool(e), "mirrored": m})
            leaks.append(
                {
                    "dataset": l.dataset,
                    "layer": l.layer,
                    "count": len(l.rows),
                    "identical": int(l.exact.sum()),
                    "shown_identical": int(l.exact[shown].sum()),
                    "threshold": l.threshold,
                    "mirrors": l.mirrors,
                    "pairs": pairs,
                    "anchor": anchor,
                }
            )
        apart = []
        for d in dict.fromkeys(x.dataset for x in f.shifts):
            names = view.names("compare_datasets", f"dataset/{d}")
            if names is not None:
                apart.append({"dataset": d, "names": names})
        return {"rows": rows, "figs": figs, "reference": view.dataset_name, "leaks": leaks, "apart": apart}


def _leak_words(identical: bool, d: float, mirrored: bool) -> str:
    """How a leaked image's card names its twin: identical files, the same picture mirrored or at
    the signatures' size (difference 0: not identical files), or a near-twin and its difference."""
    if identical:
        return "identical to"
    if d < NO_DIFFERENCE:
        return "the mirror image of" if mirrored else "a near-twin (the same picture at signature size) of"
    return f"a {'mirrored ' if mirrored else ''}near-twin (difference {difference(d)}) of"


def shown_leaks(exact: np.ndarray, cap: int) -> np.ndarray:
    """Which of a compared set's leaks (most alike first; ``exact``: identical content) its gallery
    shows, at most ``cap``: up to half of them near-twins and half identical pairs, the rest of the
    cap to whichever kind has more, in their order. Identical pairs sort first (difference 0), and
    a gallery of the first ``cap`` showed none of the near-twins, the pairs a reviewer has to look at."""
    near, same = np.flatnonzero(~exact), np.flatnonzero(exact)
    n_near = min(len(near), max(cap // 2, cap - len(same)))
    return np.sort(np.concatenate([same[: cap - n_near], near[:n_near]]))
