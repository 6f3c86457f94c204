"""2-D maps: for every reducer, a class scatter plot, an image mosaic and a grid mosaic, with the
map's trustworthiness and continuity (are map neighbours true neighbours, and the reverse?)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..figures import CENTROID_LABELS, grid_mosaic, image_mosaic, scatter_plot
from ..fingerprint import array_digest
from ..kernels import trust_and_continuity
from ..reducers import REDUCERS
from ..results import Finding, MapResult, Samples
from .base import LayerAnalysis, LayerInput


@dataclass(frozen=True)
class MapQuality:
    trustworthiness: float | None
    continuity: float | None
    samples: int


@dataclass(frozen=True, eq=False)
class MapsFinding(Finding):
    maps: Mapping[str, MapResult]
    quality: Mapping[str, MapQuality]


class Maps(LayerAnalysis):
    name = "maps"
    title = "2-D maps"
    template = "sections/maps.html"
    code = ("reportgen.kernels", "reportgen.figures")
    metrics = {
        "trustworthiness": "Trustworthiness of a 2-D map (0 to 1): 1 when every neighbour in the map is also a neighbour in the embedding space.",
        "continuity": "Continuity of a 2-D map (0 to 1): 1 when every neighbour in the embedding space stays a neighbour in the map.",
    }

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return tuple(f"{kind}_{m}" for kind in ("trustworthiness", "continuity") for m in REDUCERS)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> MapsFinding:
        n = len(layer.x)
        if n < 6:  # trustworthiness needs k < N/2 neighbours
            quality = {name: MapQuality(None, None, n) for name in layer.maps}
        else:  # O(cap^2) ranks: cached by the maps' coordinates (and the code), like the probe
            opts = layer.options
            k = min(10, max(1, n // 2 - 1))
            # sampled maps are judged where they were fitted (every sampled map shares one sample)
            fitted = [m.fitted_rows for m in layer.maps.values() if m.fitted_rows is not None]
            among = fitted[0] if fitted else None
            parts = {
                "maps": {name: array_digest(m.coords) for name, m in layer.maps.items()},
                "k": k,
                "cap": opts.trustworthiness_cap,
                "seed": layer.seed,
                "metric": opts.metric,
                "among": array_digest(among) if among is not None else None,
            }
            tc = layer.cached(
                "trust",
                parts,
                lambda: {
                    name: list(v)
                    for name, v in trust_and_continuity(
                        layer.x,
                        {name: m.coords for name, m in layer.maps.items()},
                        k=k,
                        cap=opts.trustworthiness_cap,
                        seed=layer.seed,
                        metric=opts.metric,
                        among=among,
                    ).items()
                },
            )
            quality = {name: MapQuality(*tc[name]) for name in layer.maps}
        return MapsFinding(dict(layer.maps), quality)

    def metric_values(self, f: MapsFinding) -> dict:
        out: dict = {
            "maps": {
                k: {"trustworthiness": q.trustworthiness, "continuity": q.continuity, "samples": q.samples}
                for k, q in f.quality.items()
            }
        }
        for name, q in f.quality.items():
            out[f"trustworthiness_{name}"] = q.trustworthiness
            out[f"continuity_{name}"] = q.continuity
        return out

    def summary(self, f: MapsFinding, samples: Samples) -> dict:
        return {
            "maps": {
                k: {
                    "params": dict(m.params),
                    "notes": list(m.notes),
                    **(
                        {"fitted_samples": len(m.fitted_rows), "placement": m.placement}
                        if m.fitted_rows is not None
                        else {}
                    ),
                }
                for k, m in f.maps.items()
            }
        }

    def context(self, f: MapsFinding, view) -> dict | None:
        names, labels, n = view.class_names, view.labels, len(view.labels)
        out = []
        for method, m in f.maps.items():
            many = len(names) > 20
            dots = (
                m.rows
                if len(m.rows) <= view.options.map_cap
                else np.sort(np.random.default_rng(view.seed).choice(m.rows, view.options.map_cap, replace=False))
            )
            density = len(dots) < n
            who = (
                "Every sample is a dot"
                if not density
                else f"{len(dots):,} of the {n:,} samples are dots ({'the fitted sample' if m.fitted_rows is not None and len(dots) == len(m.rows) else 'a seeded random subset'})"
            )
            scatter_caption = (
                (
                    f"{who} coloured by its class (legend: class and count). "
                    if not many
                    else f"{who} coloured by its class; with {len(names)} classes, names sit at class centroids"
                    + (f" (the {CENTROID_LABELS} largest classes)" if len(names) > CENTROID_LABELS else "")
                    + ". "
                )
                + (
                    f"Grey hexagons behind: the density of all {n:,} samples{' (those not fitted placed at their nearest fitted samples)' if m.placement == 'nearest fitted samples' else ''}. "
                    if density
                    else ""
                )
                + m.caption
            )
            scatter = view.figure(
                f"{method}-scatter",
                lambda m=m, dots=dots, density=density: scatter_plot(
                    m.coords[dots],
                    labels[dots],
                    names,
                    view.colours,
                    seed=view.seed,
                    density=m.coords if density else None,
                    counts=np.bincount(labels, minlength=len(names)),
                ),
                data=(m.coords, dots),
                alt=f"{m.title} class scatter of {view.layer}",
                caption=scatter_caption,
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
                caption=f"Thumbnails at their map positions, each bordered in its class colour. {shown:,} of {n:,} samples shown"
                + (f" (a random subset, seed {view.seed})" if shown < n else "")
                + "; drawn in random order, so overlaps favour no class.",
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
                caption=f"The same map snapped to a {side}x{side} grid by linear assignment: each of {len(gm.rows):,} samples"
                + (" (a random subset)" if len(gm.rows) < n else "")
                + " appears exactly once and nothing overlaps; layout follows the map.",
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
