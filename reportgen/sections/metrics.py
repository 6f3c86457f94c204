"""Quality metrics: the layer's table, and its kNN accuracy in the layer's header."""

from __future__ import annotations

from typing import Any

from ..analyses.metrics import MetricsFinding
from .base import Section
from .view import View


class MetricsSection(Section):
    name = "metrics"
    template = "sections/metrics.html"

    def lead(self, f: MetricsFinding) -> str:
        return f"kNN accuracy {f.knn_accuracy:.3f} (k = {f.knn_k}, {f.metric})."

    def context(self, f: MetricsFinding, view: View) -> dict[str, Any] | None:
        return {
            "knn": f.knn_accuracy,
            "k": f.knn_k,
            "metric": f.metric,
            "probe": f.probe_accuracy,
            "probe_n": f.probe_samples,
            "silhouette": f.silhouette,
            "silhouette_n": f.silhouette_samples,
            "graph": f.graph,
            "n": len(f.knn_pred),
        }
