"""Across depth: one small figure per model."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..analyses.depth import DepthFinding
from ..figures import depth_plot
from ..results import slug
from .base import Section
from .view import View


class DepthSection(Section):
    name = "depth"
    template = "sections/depth.html"

    def context(self, f: DepthFinding, view: View) -> dict[str, Any] | None:
        figs = []
        for c in f.curves:
            figs.append(
                view.figure(
                    f"depth--{slug(c.model)}",
                    partial(
                        depth_plot,
                        list(c.layers),
                        c.intrinsic_dimension,
                        c.participation_ratio,
                        c.knn_accuracy,
                        c.probe_accuracy,
                        effective_rank=c.effective_rank,
                    ),
                    data=(
                        c.intrinsic_dimension,
                        c.participation_ratio,
                        c.knn_accuracy,
                        c.probe_accuracy,
                        c.effective_rank,
                    ),
                    alt=f"{c.model} across depth",
                    caption=(
                        f"{c.model}, layers in order. Left: intrinsic dimension (TwoNN), participation ratio and "
                        "effective rank (RankMe), three counts of the dimensions the layer uses (a fall of the "
                        "effective rank is dimensional collapse). Right: kNN accuracy and linear probe. Where the "
                        "curves bend is where the model changes what it keeps."
                    ),
                    cls="half",
                )
            )
        return {"figs": figs}
