"""Image statistics: the heatmap of components against brightness, contrast, saturation, colour."""

from __future__ import annotations

from typing import Any

from ..analyses.image_stats import SHORTCUT_R, ImageStatsFinding
from ..compute.kernels import STAT_NAMES
from ..figures import heatmap
from .base import Section
from .view import View


class ImageStatisticsSection(Section):
    name = "image_statistics"
    template = "sections/image_statistics.html"

    def context(self, f: ImageStatsFinding, view: View) -> dict[str, Any] | None:
        k = f.correlation.shape[1]
        if not k:
            return None
        comps = [f"PC{i + 1}" for i in range(k)]
        fig = view.figure(
            "image-stats",
            lambda: heatmap(f.correlation, STAT_NAMES, comps, vlim=1.0, label="Pearson r", fmt=".2f"),
            data=(f.correlation,),
            alt=f"Correlation of components with image statistics for {view.layer}",
            caption=(
                "Pearson correlation of each component's scores with simple image statistics computed from the "
                f"thumbnails. |r| >= {SHORTCUT_R} flags a component that may track a shortcut (lighting, colour) "
                "rather "
                "than content."
            ),
        )
        return {"fig": fig, "shortcuts": [{"pc": j + 1, "stat": s, "r": r} for j, s, r in f.shortcuts]}
