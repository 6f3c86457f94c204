"""Principal components: the variance table and scree plot; the effective dimensionality in the
layer's header."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analyses.pca import PcaFinding
from ..figures import scree_plot
from .base import Section
from .view import View


class PcaSection(Section):
    name = "pca"
    template = "sections/pca.html"

    def lead(self, f: PcaFinding) -> str:
        return (
            f"{f.components_for(0.9)} components hold 90 % of the variance; participation ratio "
            f"{f.participation_ratio:.1f} (effective number of dimensions)."
        )

    def context(self, f: PcaFinding, view: View) -> dict[str, Any] | None:
        cum = np.cumsum(f.explained_variance_ratio)
        rows = [
            {"pc": i + 1, "ratio": float(r), "cum": float(cum[i]), "eta2": float(f.eta2[i]) if i < len(f.eta2) else 0.0}
            for i, r in enumerate(f.explained_variance_ratio)
        ]
        scree = view.figure(
            "scree",
            lambda: scree_plot(f.explained_variance_ratio),
            data=(f.explained_variance_ratio,),
            alt=f"Scree plot of {view.layer}",
            caption=(
                "Bars: share of the total variance each principal component explains; line: cumulative share. A steep "
                "drop means a few directions dominate the layer."
            ),
        )
        return {"variance": rows, "scree": scree}
