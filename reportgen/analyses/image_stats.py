"""Image statistics: the correlation of every component with brightness, contrast, saturation and
colour balance; a strong one flags a component that may track a shortcut, not content."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import STAT_NAMES, correlations
from ..results import Finding, Headline, Samples, finding_of
from .base import LayerAnalysis, LayerInput, Where
from .pca import PcaFinding

SHORTCUT_R = 0.5  # |r| at or above which a component is flagged as tracking an image statistic


@dataclass(frozen=True, eq=False)
class ImageStatsFinding(Finding):
    correlation: np.ndarray  # (4, k) Pearson r of each statistic with each component
    shortcuts: tuple[tuple[int, str, float], ...]  # (component, statistic, r) with |r| >= SHORTCUT_R


class ImageStatistics(LayerAnalysis):
    name = "image_statistics"
    title = "Image statistics"
    requires = ("pca",)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> ImageStatsFinding:
        r = correlations(layer.samples.image_stats, finding_of(found, "pca", PcaFinding).scores)
        shortcuts = tuple(
            (j, STAT_NAMES[i], float(r[i, j]))
            for j in range(r.shape[1])
            for i in range(r.shape[0])
            if abs(r[i, j]) >= SHORTCUT_R
        )
        return ImageStatsFinding(r, shortcuts)

    def headlines(self, f: ImageStatsFinding, where: Where) -> list[Headline]:
        out = []
        for j, stat, r in sorted(f.shortcuts, key=lambda s: -abs(s[2]))[:3]:
            out.append(
                Headline(
                    where.id("shortcut", f"pc{j + 1}-{stat.split()[0]}"),
                    "medium" if abs(r) >= 0.7 and j < 3 else "low",
                    f"PC{j + 1} of {where.layer} tracks image {stat} (r = {r:.2f}): a possible shortcut, not content.",
                    f"#{where.anchor}",
                    abs(r),
                )
            )
        return out

    def summary(self, f: ImageStatsFinding, samples: Samples) -> dict:
        return {
            "pca": {
                "image_stat_correlation": {s: [float(v) for v in f.correlation[i]] for i, s in enumerate(STAT_NAMES)}
            }
        }
