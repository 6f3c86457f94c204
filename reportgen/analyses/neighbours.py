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


class Neighbours(LayerAnalysis):
    name = "neighbours"
    title = "Nearest neighbours"
    requires = ("hard",)

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        return self.options.neighbours

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> NeighboursFinding:
        g = layer.graph
        q = np.asarray(
            neighbour_queries(
                g, layer.labels, layer.x, list(finding_of(found, "hard", HardFinding).hard), n_classes=layer.n_classes
            ),
            np.int64,
        )
        m = min(layer.options.neighbours, g.k)
        return NeighboursFinding(q, g.indices[q, :m], g.distances[q, :m], g.metric)

    def summary(self, f: NeighboursFinding, samples: Samples) -> dict:
        ids = samples.ids
        return {
            "neighbours": [
                {"query": ids[q], "neighbours": [ids[j] for j in nb], "distances": [float(d) for d in dist]}
                for q, nb, dist in zip(f.queries, f.neighbours, f.distances)
            ]
        }
