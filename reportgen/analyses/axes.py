"""Custom axes: every sample projected onto the line from one class centroid to another, as a
histogram and a strip of samples along it (``report.axes``).

A good file to copy for a new layer section: a frozen finding, its summary.json part, a figure
and a template (``templates/sections/axes.html``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..figures import axis_histogram
from ..kernels import AxisFinding, centroid_axis
from ..results import Finding, Samples, slug
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class AxesFinding(Finding):
    axes: tuple[AxisFinding, ...]


class Axes(LayerAnalysis):
    name = "axes"
    title = "Custom axes"
    template = "sections/axes.html"
    code = ("reportgen.kernels", "reportgen.figures")

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> AxesFinding:
        names = list(layer.samples.class_names)
        return AxesFinding(tuple(centroid_axis(layer.x, layer.labels, names, a, b) for a, b in layer.options.axes))

    def summary(self, f: AxesFinding, samples: Samples) -> dict:
        ids = samples.ids
        return {
            "axes": [
                {"a": a.class_a, "b": a.class_b, "separation": a.separation, "strip": [ids[r] for r in a.strip]}
                for a in f.axes
            ]
        }

    def context(self, f: AxesFinding, view) -> dict | None:
        names = list(view.class_names)
        out = []
        for a in f.axes:
            ia, ib = names.index(a.class_a), names.index(a.class_b)
            hist = view.figure(
                f"axis-{slug(a.class_a)}-{slug(a.class_b)}",
                lambda a=a, ia=ia, ib=ib: axis_histogram(a.t, view.labels, ia, ib, names, view.colours),
                data=(a.t,),
                alt=f"Projection onto the axis from {a.class_a} to {a.class_b}",
                caption=f"Every sample of the two classes projected onto the line through their centroids (0 = {a.class_a}, 1 = {a.class_b}). Overlap between the histograms shows how often the layer confuses them.",
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
