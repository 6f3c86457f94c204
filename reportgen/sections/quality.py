"""Image quality: each kind's rule, count and gallery (worst first), and the properties that give
the label away."""

from __future__ import annotations

from typing import Any

from ..analyses.quality import ACQUISITION, SHORTCUT_AUROC, QualityFinding
from ..compute.quality import KINDS, RULES
from .base import Section
from .view import View


class QualitySection(Section):
    name = "quality"
    template = "sections/quality.html"

    def context(self, f: QualityFinding, view: View) -> dict[str, Any] | None:
        g = view.gallery_size * 2
        kinds = []
        for kind in KINDS:
            rows = f.flags.rows(kind)
            kinds.append(
                {
                    "kind": kind,
                    "title": kind.replace("_", " "),
                    "rule": RULES[kind],
                    "count": len(rows),
                    "set_wide": f.flags.set_wide.get(kind),
                    "gallery": [view.sample(r) for r in rows[:g]],
                }
            )
        names = view.class_names
        shortcuts = [
            {
                "prop": s.prop,
                "cls": names[s.cls],
                "words": s.words,
                "auroc": max(s.auroc, 1 - s.auroc),
                "strong": max(s.auroc, 1 - s.auroc) >= SHORTCUT_AUROC and s.prop in ACQUISITION,
            }
            for s in f.shortcuts
        ]
        return {"kinds": kinds, "n": f.n, "flagged": f.flagged, "shortcuts": shortcuts, "limit": SHORTCUT_AUROC}
