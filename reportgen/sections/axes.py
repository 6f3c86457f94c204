"""Custom axes: a histogram and a strip of samples along each centroid-to-centroid line.

A good file to copy for a new section (with ``analyses/axes.py`` and ``templates/sections/axes.html``):
a context of plain values, one figure drawn through ``view.figure``."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..analyses.axes import AxesFinding
from ..figures import axis_histogram
from ..results import slug
from .base import Section
from .view import View


class AxesSection(Section):
    name = "axes"
    template = "sections/axes.html"

    def context(self, f: AxesFinding, view: View) -> dict[str, Any] | None:
        names = list(view.class_names)
        out = []
        for a in f.axes:
            ia, ib = names.index(a.class_a), names.index(a.class_b)
            hist = view.figure(
                f"axis-{slug(a.class_a)}-{slug(a.class_b)}",
                partial(axis_histogram, a.t, view.labels, ia, ib, names, view.colours),
                data=(a.t,),
                alt=f"Projection onto the axis from {a.class_a} to {a.class_b}",
                caption=(
                    "Every sample of the two classes projected onto the line through their centroids (0 = "
                    f"{a.class_a}, "
                    f"1 = {a.class_b}). Overlap between the histograms shows how often the layer confuses them."
                ),
            )
            out.append(
                {
                    "a": a.class_a,
                    "b": a.class_b,
                    "separation": a.separation,
                    "strip": [view.sample(r, t=float(a.t[r])) for r in a.strip],
                    "hist": hist,
                }
            )
        return {"axes": out} if out else None
