"""Principal components: explained variance (table and scree), class eta^2 per component, and the
effective dimensionality of the layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import eta_squared
from ..results import Finding, Samples
from .base import Column, LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class PcaFinding(Finding):
    explained_variance_ratio: np.ndarray  # (k,) of the components shown
    eigenvalues: np.ndarray  # the whole spectrum, descending
    total_variance: float
    eta2: np.ndarray  # (k,) share of each component's variance explained by the class label
    scores: np.ndarray  # (N, k) component scores of the components shown

    @property
    def k(self) -> int:
        return len(self.explained_variance_ratio)

    def components_for(self, share: float) -> int:
        if self.total_variance <= 0:
            return 0
        cum = np.cumsum(self.eigenvalues) / self.total_variance
        return int(min(len(cum), np.searchsorted(cum, share - 1e-12) + 1))

    @property
    def participation_ratio(self) -> float:
        ev = np.clip(self.eigenvalues, 0, None)
        s2 = float((ev**2).sum())
        return float(ev.sum() ** 2 / s2) if s2 > 0 else 0.0

    @property
    def variance_top10(self) -> float:
        return float(np.sum(self.eigenvalues[:10]) / self.total_variance) if self.total_variance > 0 else 0.0


class PcaAnalysis(LayerAnalysis):
    name = "pca"
    title = "Principal components"
    metrics = {
        "components_for_90": "Effective dimensionality: principal components needed for 90 % of the variance.",
        "participation_ratio": (
            "Participation ratio (sum of eigenvalues)^2 / sum of squared eigenvalues: the effective number of "
            "dimensions."
        ),
        "variance_top10": "Share of the variance held by the first 10 principal components.",
    }
    overview = (
        Column("variance_top10", "variance in 10 PCs", "pct", order=10),
        Column("components_for_90", "PCs for 90 %", "int", order=10),
    )

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> PcaFinding:
        p = layer.pca
        k = min(layer.n_components, p.k)
        scores = p.scores[:, :k]
        return PcaFinding(
            p.explained_variance_ratio[:k], p.eigenvalues, p.total_variance, eta_squared(scores, layer.labels), scores
        )

    def metric_values(self, f: PcaFinding) -> dict:
        return {
            "components_for_90": f.components_for(0.9),
            "participation_ratio": float(f.participation_ratio),
            "variance_top10": f.variance_top10,
        }

    def summary(self, f: PcaFinding, samples: Samples) -> dict:
        return {
            "pca": {
                "mean_centred": True,
                "explained_variance_ratio": [float(v) for v in f.explained_variance_ratio],
                "cumulative": [float(v) for v in np.cumsum(f.explained_variance_ratio)],
                "total_variance": float(f.total_variance),
                "variance_top10": f.variance_top10,
                "components_for_90": f.components_for(0.9),
                "participation_ratio": float(f.participation_ratio),
                "eta2": [float(v) for v in f.eta2],
            }
        }
