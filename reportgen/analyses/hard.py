"""Hard samples (neighbours mostly of another class: mislabelled, ambiguous, or a weakness of the
layer) and outliers (the largest distance to the k-th neighbour), both from the layer's graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import HardSample, hard_samples, outliers
from ..results import Finding, SampleFlag, Samples
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class HardFinding(Finding):
    hard: tuple[HardSample, ...]
    outliers: np.ndarray  # rows, most isolated first
    outlier_distance: np.ndarray  # distance of each outlier to its k-th neighbour
    k: int


class HardSamples(LayerAnalysis):
    name = "hard"
    title = "Hard samples and outliers"

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        return self.options.knn_k

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> HardFinding:
        opts = layer.options
        k = min(opts.knn_k, layer.graph.k)
        hard = hard_samples(layer.graph, layer.labels, k, opts.hard_samples)
        rows = outliers(layer.graph, k, min(opts.hard_samples, len(layer.x)))
        return HardFinding(tuple(hard), rows, layer.graph.distances[rows, k - 1], k)

    def flags(self, f: HardFinding) -> list[SampleFlag]:
        return [
            SampleFlag("hard sample", np.asarray([h.row for h in f.hard], np.int64)),
            SampleFlag("isolated", f.outliers),
        ]

    def summary(self, f: HardFinding, samples: Samples) -> dict:
        ids, names = samples.ids, samples.class_names
        return {
            "hard_samples": [
                {"id": ids[h.row], "label": names[h.label], "majority": names[h.majority], "agreement": h.agreement}
                for h in f.hard
            ],
            "outliers": [ids[r] for r in f.outliers],
        }
