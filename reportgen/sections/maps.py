"""2-D maps: a class scatter plot, an image mosaic and a grid mosaic per reducer."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..analyses.maps import MapsFinding
from ..figures import CENTROID_LABELS, grid_mosaic, image_mosaic, scatter_plot
from .base import Section
from .view import View


class MapsSection(Section):
    name = "maps"
    template = "sections/maps.html"

    def context(self, f: MapsFinding, view: View) -> dict[str, Any] | None:
        names, labels, n = view.class_names, view.labels, len(view.labels)
        out = []
        for method, m in f.maps.items():
            many = len(names) > 20
            dots = (
                m.rows
                if len(m.rows) <= view.options.map_cap
                else np.union1d(  # a seeded sample that always holds every flagged sample
                    np.random.default_rng(view.seed).choice(m.rows, view.options.map_cap, replace=False),
                    view.flagged,
                )
            )
            density = len(dots) < n
            sample = (
                "the fitted sample"
                if m.fitted_rows is not None and len(dots) == len(m.rows)
                else "a seeded random subset"
            )
            who = "Every sample is a dot" if not density else f"{len(dots):,} of the {n:,} samples are dots ({sample})"
            if not many:
                legend = f"{who} coloured by its class (legend: class and count). "
            else:
                largest = f" (the {CENTROID_LABELS} largest classes)" if len(names) > CENTROID_LABELS else ""
                legend = (
                    f"{who} coloured by its class; with {len(names)} classes, names sit at class centroids{largest}. "
                )
            behind = ""
            if density:
                placed = (
                    " (those not fitted placed at their nearest fitted samples)"
                    if m.placement == "nearest fitted samples"
                    else ""
                )
                behind = (
                    f"Grey hexagons behind: the density of all {n:,} samples{placed}; a line in each class's colour "
                    "circles the densest half of that class. "
                    + (
                        "Every flagged sample is among the dots. "
                        if len(view.flagged) >= view.flagged_total
                        else f"Of the {view.flagged_total:,} flagged samples, each flag's worst in turn are among the "
                        f"dots ({len(view.flagged):,}). "
                    )
                )
            scatter_caption = legend + behind + m.caption
            scatter = view.figure(
                f"{method}-scatter",
                partial(
                    scatter_plot,
                    m.coords[dots],
                    labels[dots],
                    names,
                    view.colours,
                    seed=view.seed,
                    density=m.coords if density else None,
                    density_labels=labels if density else None,
                    counts=np.bincount(labels, minlength=len(names)),
                ),
                data=(m.coords, dots),
                alt=f"{m.title} class scatter of {view.layer}",
                caption=scatter_caption,
                points=(m.coords, dots),
            )
            cap = view.mosaic_cap
            mo = image_mosaic(
                m.coords, view.thumbnails, labels, view.colours, cap=cap, seed=view.seed, among=m.fitted_rows
            )
            shown = len(mo.rows)
            mosaic = view.mosaic(
                f"{method}-mosaic",
                mo,
                data=(m.coords,),
                alt=f"{m.title} image mosaic of {view.layer}",
                caption=f"Thumbnails at their map positions, each bordered in its class colour. {shown:,} of {n:,} "
                f"samples shown{f' (a random subset, seed {view.seed})' if shown < n else ''}; drawn in random order, "
                "so overlaps favour no class.",
            )
            gm = grid_mosaic(
                m.coords, view.thumbnails, labels, view.colours, cap=view.grid_cap, seed=view.seed, among=m.fitted_rows
            )
            side = int(np.sqrt(len(gm.rows)))
            grid = view.mosaic(
                f"{method}-grid",
                gm,
                data=(m.coords,),
                alt=f"{m.title} grid mosaic of {view.layer}",
                caption=f"The same map snapped to a {side}x{side} grid by linear assignment: each of "
                f"{len(gm.rows):,} samples{' (a random subset)' if len(gm.rows) < n else ''} appears exactly once and "
                "nothing overlaps; layout follows the map.",
            )
            q = f.quality.get(method)
            out.append(
                {
                    "method": method,
                    "title": m.title,
                    "params": dict(m.params),
                    "notes": list(m.notes),
                    "quality": q,
                    "scatter": scatter,
                    "mosaic": mosaic,
                    "grid": grid,
                }
            )
        return {"maps": out} if out else None
