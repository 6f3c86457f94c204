"""Hard samples and outliers, as galleries."""

from __future__ import annotations

from typing import Any

from ..analyses.hard import HardFinding
from .base import Section
from .view import View


class HardSection(Section):
    name = "hard"
    template = "sections/hard.html"

    def context(self, f: HardFinding, view: View) -> dict[str, Any] | None:
        names = view.class_names
        return {
            "k": f.k,
            "hard": [view.sample(h.row, majority=names[h.majority], agreement=h.agreement) for h in f.hard],
            "outliers": [view.sample(r, distance=float(d)) for r, d in zip(f.outliers, f.outlier_distance)],
        }
