"""Quality metrics of a layer: leave-one-out kNN accuracy (from the layer's graph), a linear probe
and the silhouette of the class labels (on stated sample caps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import knn_predict, linear_probe_accuracy, silhouette
from ..compute.neighbours import GraphQuality, NeighbourGraph
from ..results import Finding, Headline, SampleValues
from .base import Column, LayerAnalysis, LayerInput, Where


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
    graph: GraphQuality  # how the neighbour graph behind kNN accuracy was built, and its recall
    intrinsic_dimension: float | None  # TwoNN estimate from each sample's two nearest neighbours


def twonn(graph: NeighbourGraph) -> float | None:
    """TwoNN maximum-likelihood intrinsic dimension: N / sum(log(r2 / r1)) over samples whose two
    nearest neighbours are distinct and not at distance 0 (cosine distances as chord lengths)."""
    if graph.k < 2:
        return None
    d = graph.distances[:, :2]
    r = np.sqrt(2 * np.clip(d, 0, None)) if graph.metric == "cosine" else d
    ok = (r[:, 0] > 0) & (r[:, 1] > r[:, 0])
    if ok.sum() < 10:
        return None
    return float(ok.sum() / np.log(r[ok, 1] / r[ok, 0]).sum())


class Metrics(LayerAnalysis):
    name = "metrics"
    title = "Quality metrics"
    metrics = {
        "knn_accuracy": (
            "Leave-one-out kNN accuracy: the share of samples whose k nearest neighbours (itself excluded) mostly "
            "carry "
            "its label."
        ),
        "linear_probe_accuracy": (
            "Linear-probe accuracy: a logistic regression on the standardised embeddings, mean over stratified 5-fold "
            "cross-validation."
        ),
        "silhouette": (
            "Silhouette of the class labels (-1 to 1): how much closer samples are to their own class than to the "
            "nearest other class."
        ),
        "intrinsic_dimension": (
            "Intrinsic dimension (TwoNN, Facco et al. 2017): the dimension of the surface the samples lie on, from the "
            "ratio of each sample's two nearest-neighbour distances."
        ),
        "neighbour_recall": (
            "Recall@k of the layer's neighbour graph: the share of exact nearest neighbours it lists (1 for an exact "
            "graph; for an approximate one, measured on a seeded sample of queries)."
        ),
    }

    overview = (
        Column("knn_accuracy", "kNN accuracy", order=20),
        Column("linear_probe_accuracy", "linear probe", order=20),
        Column("silhouette", "silhouette", order=20),
    )

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        return self.options.knn_k

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> MetricsFinding:
        opts = layer.options
        k = min(opts.knn_k, layer.graph.k)
        pred = knn_predict(layer.graph, layer.labels, k)
        probe: tuple = (None, 0)
        if opts.linear_probe:  # the costliest analysis: cached by content and code like the maps
            probe = tuple(
                layer.cached(
                    "probe",
                    {"cap": opts.probe_cap, "seed": layer.seed},
                    lambda: list(linear_probe_accuracy(layer.x, layer.labels, cap=opts.probe_cap, seed=layer.seed)),
                )
            )
        sil = layer.cached(
            "silhouette",
            {"cap": opts.trustworthiness_cap, "seed": layer.seed, "metric": opts.metric},
            lambda: list(
                silhouette(layer.x, layer.labels, cap=opts.trustworthiness_cap, seed=layer.seed, metric=opts.metric)
            ),
        )
        return MetricsFinding(
            float((pred == layer.labels).mean()),
            k,
            layer.graph.metric,
            pred,
            probe[0],
            int(probe[1]),
            sil[0],
            sil[1],
            layer.graph_quality,
            twonn(layer.graph),
        )

    def metric_values(self, f: MetricsFinding) -> dict:
        return {
            "knn_accuracy": f.knn_accuracy,
            "knn_k": f.knn_k,
            "metric": f.metric,
            "linear_probe_accuracy": f.probe_accuracy,
            "linear_probe_samples": f.probe_samples,
            "silhouette": f.silhouette,
            "silhouette_samples": f.silhouette_samples,
            "neighbour_recall": f.graph.recall,
            "neighbour_recall_queries": f.graph.queries,
            "neighbour_index": f.graph.method,
            "intrinsic_dimension": f.intrinsic_dimension,
        }

    def sample_values(self, f: MetricsFinding) -> list[SampleValues]:
        return [SampleValues(f"kNN prediction (k = {f.knn_k})", f.knn_pred, "class", per_layer=True)]

    def headlines(self, f: MetricsFinding, where: Where) -> list[Headline]:
        if f.graph.queries and f.graph.recall < 0.95:
            return [
                Headline(
                    where.id("metrics", "neighbour_recall"),
                    "medium",
                    (
                        f"The approximate neighbour graph of {where.layer} finds {100 * f.graph.recall:.0f} % of exact "
                        "neighbours: kNN-based findings there are approximate (set report.neighbour_index: exact)."
                    ),
                    f"#{where.anchor}",
                    1 - f.graph.recall,
                )
            ]
        return []
