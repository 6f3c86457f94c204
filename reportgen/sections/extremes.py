"""Extremity galleries: both ends of every component, with their class make-up."""

from __future__ import annotations

from typing import Any

from ..analyses.extremes import ExtremesFinding, makeup
from .base import Section
from .view import View


class ExtremesSection(Section):
    name = "extremes"
    template = "sections/extremes.html"

    def context(self, f: ExtremesFinding, view: View) -> dict[str, Any] | None:
        if not f.ends:
            return None
        g = view.gallery_size
        galleries = []
        for e, lo, hi, ratio, eta in zip(f.ends, f.low_scores, f.high_scores, f.ratios, f.eta2):
            galleries.append(
                {
                    "pc": e.component + 1,
                    "ratio": float(ratio),
                    "eta2": float(eta),
                    "low": [view.sample(r, score=float(s)) for r, s in zip(e.low[:g], lo[:g])],
                    "high": [view.sample(r, score=float(s)) for r, s in zip(e.high[:g], hi[:g])],
                    "low_makeup": makeup(e.low[:g], view.labels, view.class_names),
                    "high_makeup": makeup(e.high[:g], view.labels, view.class_names),
                    "low_names": view.names("extremes", f"pc{e.component + 1}-low"),
                    "high_names": view.names("extremes", f"pc{e.component + 1}-high"),
                }
            )
        sizes = [len(lo) for lo, _ in f.end_sets[:1]]
        return {"galleries": galleries, "end_size": sizes[0] if sizes else 0}
