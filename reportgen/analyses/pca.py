"""Principal components: explained variance (table and scree), class eta^2 per component, and the
effective dimensionality of the layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import eta_squared
from ..results import Finding, Headline, Samples
from .base import Column, LayerAnalysis, LayerInput, Where


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
    def effective_rank(self) -> float:
        """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of
        the centred embeddings - how many directions the layer really uses."""
        return effective_rank(self.eigenvalues)

    @property
    def variance_top10(self) -> float:
        return float(np.sum(self.eigenvalues[:10]) / self.total_variance) if self.total_variance > 0 else 0.0


def effective_rank(eigenvalues: np.ndarray) -> float:
    """RankMe from the covariance spectrum (singular values are the eigenvalues' square roots)."""
    s = np.sqrt(np.clip(np.asarray(eigenvalues, np.float64), 0, None))
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


#: Dimensional collapse: an effective rank under this share of the dimensions the data could fill
#: (min(samples - 1, features)); measured for reference: EfficientNet-Lite0 on Fashion-MNIST, 0.37-0.53
#: of them trained, 0.30-0.44 at random initialisation.
COLLAPSE_SHARE = 0.02


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
        "effective_rank": (
            "Effective rank (RankMe): exp of the entropy of the normalised singular values - the directions the layer "
            "uses; far below its width means dimensional collapse."
        ),
    }
    overview = (
        Column("variance_top10", "variance in 10 PCs", "pct", order=10),
        Column("components_for_90", "PCs for 90 %", "int", order=10),
        Column("effective_rank", "eff. rank", "num1", order=10),
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
            "effective_rank": round(f.effective_rank, 3),
        }

    def headlines(self, f: PcaFinding, where: Where) -> list[Headline]:
        room = min(len(f.scores) - 1, len(f.eigenvalues))
        rank = f.effective_rank
        if room < 16 or f.total_variance <= 0 or rank >= max(2.0, COLLAPSE_SHARE * room):
            return []
        return [
            Headline(
                where.id("pca", "collapse"),
                "high",
                f"Dimensional collapse in {where.layer}: its embeddings use about {rank:.1f} of {room:,} possible "
                "directions (effective rank, RankMe).",
                f"#{where.anchor}",
                1 - rank / room,
            )
        ]

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
                "effective_rank": round(f.effective_rank, 3),
                "eta2": [float(v) for v in f.eta2],
            }
        }
