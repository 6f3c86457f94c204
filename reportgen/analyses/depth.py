"""Depth curves: per model, across its layers in order, the intrinsic dimension (TwoNN) beside the
participation ratio, and kNN accuracy beside the linear probe - one small figure per model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..results import Finding, Samples
from .base import BuildAnalysis, BuildInput

if TYPE_CHECKING:
    from ..specification import ReportSpec


@dataclass(frozen=True, eq=False)
class DepthCurve:
    model: str
    layers: tuple[str, ...]
    intrinsic_dimension: np.ndarray  # NaN where unknown
    participation_ratio: np.ndarray
    knn_accuracy: np.ndarray
    probe_accuracy: np.ndarray
    effective_rank: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True, eq=False)
class DepthFinding(Finding):
    curves: tuple[DepthCurve, ...]


def _f(v: object) -> float:
    return float("nan") if v is None else float(v)  # type: ignore[arg-type]


class Depth(BuildAnalysis):
    name = "depth"
    title = "Across depth"

    def enabled(self, spec: ReportSpec) -> bool:
        return any(len(m.layers) > 1 for m in spec.models)

    def run(self, b: BuildInput) -> DepthFinding | None:
        curves = []
        for run in b.runs:
            layers = list(run.embeddings.layers)
            if len(layers) < 2:
                continue
            index: dict[str, int] = dict(run.embeddings.manifest.get("layer_index") or {})  # type: ignore[call-overload]
            given = list(layers)
            layers.sort(key=lambda l: (index.get(l, 0), given.index(l)))
            met = [b.layers[(run.model.name, l)].metrics for l in layers]
            curves.append(
                DepthCurve(
                    run.model.name,
                    tuple(layers),
                    *(
                        np.asarray([_f(m.get(k)) for m in met])
                        for k in (
                            "intrinsic_dimension",
                            "participation_ratio",
                            "knn_accuracy",
                            "linear_probe_accuracy",
                            "effective_rank",
                        )
                    ),
                )
            )
        return DepthFinding(tuple(curves)) if curves else None

    def summary(self, f: DepthFinding, samples: Samples) -> dict:
        def clean(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else round(float(v), 4) for v in a]

        return {
            "depth": [
                {
                    "model": c.model,
                    "layers": list(c.layers),
                    "intrinsic_dimension": clean(c.intrinsic_dimension),
                    "participation_ratio": clean(c.participation_ratio),
                    "knn_accuracy": clean(c.knn_accuracy),
                    "linear_probe_accuracy": clean(c.probe_accuracy),
                    "effective_rank": clean(c.effective_rank),
                }
                for c in f.curves
            ]
        }
