"""Class association: where each class's mean lies on each principal component (a heatmap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..figures import heatmap
from ..kernels import class_means
from ..results import Finding, Samples
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True, eq=False)
class ClassMeansFinding(Finding):
    class_means: np.ndarray  # (C, k) class mean score per component in std units (NaN: no samples)


class ClassAssociation(LayerAnalysis):
    name = "class_association"
    title = "Classes and components"
    template = "sections/class_association.html"
    requires = ("pca",)
    code = ("reportgen.figures",)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> ClassMeansFinding:
        scores = found["pca"].scores
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

    def context(self, f: ClassMeansFinding, view) -> dict | None:
        k = f.class_means.shape[1]
        if not k:
            return None
        comps = [f"PC{i + 1}" for i in range(k)]
        fig = view.figure(
            "class-means",
            lambda: heatmap(f.class_means, view.class_names, comps, label="class mean (std units)"),
            data=(f.class_means,),
            alt=f"Class means per component for {view.layer}",
            caption="Each cell: how far a class's mean score on a component lies from the overall mean, in standard deviations (red high, blue low). A column with one strong cell is a component that singles out that class.",
        )
        return {"fig": fig}
