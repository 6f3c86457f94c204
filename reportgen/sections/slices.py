"""Slices: the table of the worst groups and their map."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analyses.slices import SHOWN, SlicesFinding
from ..figures import slices_plot
from ..figures.plots import BACKGROUND_CAP
from .base import Section
from .view import View


class SlicesSection(Section):
    name = "slices"
    template = "sections/slices.html"

    def context(self, f: SlicesFinding, view: View) -> dict[str, Any] | None:
        if not f.slices:
            return None
        names = view.class_names
        coords = f.map_coords
        fig = None
        if coords is not None:
            shown = [s.id for s in f.slices[:SHOWN]]
            every = np.arange(len(coords))
            fig = view.figure(
                "slices",
                lambda: slices_plot(coords, f.assignment, shown, seed=view.seed),
                data=(coords, f.assignment),
                alt=f"Slices of {view.layer} on its {f.map_method} map",
                caption=(
                    f"The {len(shown)} worst slices of {view.layer} drawn on its {f.map_method} map (grey: every other "
                    "sample); labels at each slice's centre."
                ),
                points=(coords, every if len(every) <= BACKGROUND_CAP else np.zeros(0, np.int64)),
            )
        rows = []
        for s in f.slices[:SHOWN]:
            rows.append(
                {
                    "id": s.id,
                    "size": len(s.rows),
                    "knn": s.knn_accuracy,
                    "probe": s.probe_accuracy,
                    "traits": ", ".join(s.traits),
                    "makeup": ", ".join(f"{k}× {names[c]}" for c, k in s.makeup[:3])
                    + (" ..." if len(s.makeup) > 3 else ""),
                    "typical": [view.sample(r) for r in s.typical[: max(4, view.gallery_size)]],
                    "names": view.names("slices", f"slice{s.id}"),
                }
            )
        return {
            "described": any(r["names"] is not None for r in rows),
            "rows": rows,
            "fig": fig,
            "method": f.map_method,
            "overall": f.overall,
            "n": len(f.slices),
            "clustered": f.clustered,
            "total": len(f.assignment),
            "space": f.space,
            "covered": int((f.assignment > 0).sum()),
        }
