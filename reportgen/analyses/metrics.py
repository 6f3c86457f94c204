"""Quality metrics of a layer: leave-one-out kNN accuracy (from the layer's graph), a linear probe
and the silhouette of the class labels (on stated sample caps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..kernels import knn_predict, linear_probe_accuracy, silhouette
from ..results import Finding
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class MetricsFinding(Finding):
    knn_accuracy: float
    knn_k: int
    metric: str
    knn_pred: np.ndarray  # (N,) each sample's kNN-predicted class (itself excluded)
    probe_accuracy: float | None
    probe_samples: int
    silhouette: float | None
    silhouette_samples: int


class Metrics(LayerAnalysis):
    name = "metrics"
    title = "Quality metrics"
    template = "sections/metrics.html"
    code = ("reportgen.kernels",)
    metrics = {
        "knn_accuracy": "Leave-one-out kNN accuracy: the share of samples whose k nearest neighbours (itself excluded) mostly carry its label.",
        "linear_probe_accuracy": "Linear-probe accuracy: a logistic regression on the standardised embeddings, mean over stratified 5-fold cross-validation.",
        "silhouette": "Silhouette of the class labels (-1 to 1): how much closer samples are to their own class than to the nearest other class.",
    }

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> MetricsFinding:
        opts = layer.options
        k = min(opts.knn_k, layer.graph.k)
        pred = knn_predict(layer.graph, layer.labels, k)
        probe: tuple = (None, 0)
        if opts.linear_probe:  # the costliest analysis: cached by content and code like the maps
            probe = tuple(layer.cached("probe", {"cap": opts.probe_cap, "seed": layer.seed},
                                       lambda: list(linear_probe_accuracy(layer.x, layer.labels, cap=opts.probe_cap, seed=layer.seed))))
        sil = layer.cached("silhouette", {"cap": opts.trustworthiness_cap, "seed": layer.seed, "metric": opts.metric},
                           lambda: list(silhouette(layer.x, layer.labels, cap=opts.trustworthiness_cap, seed=layer.seed, metric=opts.metric)))
        return MetricsFinding(float((pred == layer.labels).mean()), k, layer.graph.metric, pred, probe[0], int(probe[1]), sil[0], sil[1])

    def metric_values(self, f: MetricsFinding) -> dict:
        return {"knn_accuracy": f.knn_accuracy, "knn_k": f.knn_k, "metric": f.metric, "linear_probe_accuracy": f.probe_accuracy,
                "linear_probe_samples": f.probe_samples, "silhouette": f.silhouette, "silhouette_samples": f.silhouette_samples}

    def context(self, f: MetricsFinding, view) -> dict:
        return {"knn": f.knn_accuracy, "k": f.knn_k, "metric": f.metric, "probe": f.probe_accuracy, "probe_n": f.probe_samples,
                "silhouette": f.silhouette, "silhouette_n": f.silhouette_samples}
