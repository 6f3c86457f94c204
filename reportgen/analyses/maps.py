"""2-D maps: for every reducer, a class scatter plot, an image mosaic and a grid mosaic, with the
map's trustworthiness and continuity (are map neighbours true neighbours, and the reverse?)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..compute.kernels import trust_and_continuity
from ..fingerprint import array_digest
from ..reducers.base import REDUCERS
from ..results import Finding, MapResult, Samples
from .base import Column, LayerAnalysis, LayerInput


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
    metrics = {
        "trustworthiness": (
            "Trustworthiness of a 2-D map (0 to 1): 1 when every neighbour in the map is also a neighbour in the "
            "embedding space."
        ),
        "continuity": (
            "Continuity of a 2-D map (0 to 1): 1 when every neighbour in the embedding space stays a neighbour in the "
            "map."
        ),
    }

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return tuple(f"{kind}_{m}" for kind in ("trustworthiness", "continuity") for m in REDUCERS)

    @classmethod
    def columns(cls) -> tuple[Column, ...]:
        return tuple(Column(f"trustworthiness_{m}", f"trust. {m}", order=30) for m in REDUCERS)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> MapsFinding:
        n = len(layer.x)
        if n < 6:  # trustworthiness needs k < N/2 neighbours
            quality = {name: MapQuality(None, None, n) for name in layer.maps}
        else:  # O(cap^2) ranks: cached by the maps' keys (and the code), like the probe
            opts = layer.options
            k = min(10, max(1, n // 2 - 1))
            # sampled maps are judged where they were fitted (every sampled map shares one sample)
            fitted = [m.fitted_rows for m in layer.maps.values() if m.fitted_rows is not None]
            among = fitted[0] if fitted else None
            parts = {
                "maps": {name: m.key for name, m in layer.maps.items()},
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
