"""Nearest neighbours in the full embedding space: one typical sample per class (nearest its class
centroid) and the hardest samples, each with its nearest samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import neighbour_queries
from ..results import Finding, Samples, finding_of
from .base import LayerAnalysis, LayerInput
from .hard import HardFinding


@dataclass(frozen=True, eq=False)
class NeighboursFinding(Finding):
    queries: np.ndarray  # (Q,) rows
    neighbours: np.ndarray  # (Q, m) rows, nearest first
    distances: np.ndarray  # (Q, m)
    metric: str
    classes: int = 0  # classes with a typical sample in the data
    classes_shown: int = 0  # of them, those with a row (report.neighbour_classes)


class Neighbours(LayerAnalysis):
    name = "neighbours"
    title = "Nearest neighbours"
    requires = ("hard",)

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        return self.options.neighbours

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> NeighboursFinding:
        g = layer.graph
        hard = list(finding_of(found, "hard", HardFinding).hard)
        rows, classes = neighbour_queries(
            g, layer.labels, layer.x, hard, n_classes=layer.n_classes, max_classes=layer.options.neighbour_classes
        )
        q = np.asarray(rows, np.int64)
        m = min(layer.options.neighbours, g.k)
        shown = min(classes, layer.options.neighbour_classes)
        return NeighboursFinding(q, g.indices[q, :m], g.distances[q, :m], g.metric, classes, shown)

    def summary(self, f: NeighboursFinding, samples: Samples) -> dict:
        ids = samples.ids
        return {
            "neighbours": [
                {"query": ids[q], "neighbours": [ids[j] for j in nb], "distances": [float(d) for d in dist]}
                for q, nb, dist in zip(f.queries, f.neighbours, f.distances)
            ],
            "classes": f.classes,
            "classes_shown": f.classes_shown,
        }
