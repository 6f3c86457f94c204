"""Class association: where each class's mean lies on each principal component (a heatmap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import class_means
from ..results import Finding, Samples, finding_of
from .base import LayerAnalysis, LayerInput
from .pca import PcaFinding


@dataclass(frozen=True, eq=False)
class ClassMeansFinding(Finding):
    class_means: np.ndarray  # (C, k) class mean score per component in std units (NaN: no samples)


class ClassAssociation(LayerAnalysis):
    name = "class_association"
    title = "Classes and components"
    requires = ("pca",)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> ClassMeansFinding:
        scores = finding_of(found, "pca", PcaFinding).scores
        return ClassMeansFinding(class_means(scores, layer.labels, layer.n_classes))

    def summary(self, f: ClassMeansFinding, samples: Samples) -> dict:
        names = samples.class_names
        return {
            "pca": {
                "class_means": {
                    names[c]: [None if np.isnan(v) else float(v) for v in row] for c, row in enumerate(f.class_means)
                }
            }
        }
