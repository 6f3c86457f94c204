"""Classes and components: the class-mean heatmap."""

from __future__ import annotations

from typing import Any

from ..analyses.classes import ClassMeansFinding
from ..figures import heatmap
from .base import Section
from .view import View


class ClassAssociationSection(Section):
    name = "class_association"
    template = "sections/class_association.html"

    def context(self, f: ClassMeansFinding, view: View) -> dict[str, Any] | None:
        k = f.class_means.shape[1]
        if not k:
            return None
        comps = [f"PC{i + 1}" for i in range(k)]
        fig = view.figure(
            "class-means",
            lambda: heatmap(f.class_means, view.class_names, comps, label="class mean (std units)"),
            data=(f.class_means,),
            alt=f"Class means per component for {view.layer}",
            caption=(
                "Each cell: how far a class's mean score on a component lies from the overall mean, in standard "
                "deviations (red high, blue low). A column with one strong cell is a component that singles out that "
                "class."
            ),
        )
        return {"fig": fig}
