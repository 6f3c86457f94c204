"""Custom axes: every sample projected onto the line from one class centroid to another, as a
histogram and a strip of samples along it (``report.axes``).

A good file to copy for a new layer section: a frozen finding, its summary.json part, a figure
and a template (``templates/sections/axes.html``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..compute.kernels import AxisFinding, centroid_axis
from ..results import Finding, Samples
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class AxesFinding(Finding):
    axes: tuple[AxisFinding, ...]


class Axes(LayerAnalysis):
    name = "axes"
    title = "Custom axes"

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
