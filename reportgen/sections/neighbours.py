"""Nearest neighbours: each query sample beside its nearest samples."""

from __future__ import annotations

from typing import Any

from ..analyses.neighbours import NeighboursFinding
from .base import Section
from .view import View


class NeighboursSection(Section):
    name = "neighbours"
    template = "sections/neighbours.html"

    def context(self, f: NeighboursFinding, view: View) -> dict[str, Any] | None:
        labels = view.labels
        rows = [
            {
                "query": view.sample(q),
                "items": [
                    view.sample(j, distance=float(d), same=bool(labels[j] == labels[q])) for j, d in zip(nb, dist)
                ],
            }
            for q, nb, dist in zip(f.queries, f.neighbours, f.distances)
        ]
        return {
            "rows": rows,
            "metric": f.metric,
            "m": f.neighbours.shape[1],
            "classes": f.classes,
            "shown": f.classes_shown,
        }
