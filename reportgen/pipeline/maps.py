"""The layer's neighbour graph and its 2-D maps, each cached under a key that carries the keys of
what it was computed from: the graph carries the embeddings' key; a map carries the embeddings',
the PCA's when it reads the PCA, and the graph's when it was fitted on the layer's graph (so a
graph built another way - ``report.neighbour_index`` - refits every map fitted on it).

Above ``report.map_cap`` samples, maps other than PCA are fitted on a seeded stratified sample
(``MapSample``); the rest are placed by the fitted map's transform or at their nearest fitted
samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..compute.neighbours import GraphQuality, NeighbourGraph, build_graph, nearest_fitted
from ..compute.pca import PcaResult
from ..datasets.selection import stratified_rows
from ..fingerprint import code_fingerprint
from ..options import ReportOptions
from ..reducers.base import FittedMap, Reducer, call_fit
from ..results import MapResult
from ..store.cache import Cache
from ..streaming import gather_rows
from .process import Stages


def pca_key(cache: Cache, emb_key: str, layer: str) -> str:
    """The identity of a layer's PCA (every component count shares it: the leading components are
    the same whatever the count)."""
    return cache.key("pca", {"layer": layer}, code_fingerprint("reportgen.compute.pca"), [emb_key])


def graph_key(
    cache: Cache, opts: ReportOptions, n: int, k: int, seed: int, emb_key: str, layer: str, sample: Any = None
) -> str:
    """The identity of a neighbour graph of ``n`` rows of a layer (``sample``: which rows, when not all)."""
    parts = {"layer": layer, "k": k, "metric": opts.metric, "method": _method(opts, n), "seed": seed, "sample": sample}
    return cache.key("graphs", parts, code_fingerprint("reportgen.compute.neighbours"), [emb_key])


def _method(opts: ReportOptions, n: int) -> str:
    method = opts.neighbour_index
    if method == "auto":
        method = "approximate" if n > opts.approximate_above else "exact"
    return method


def neighbour_graph(
    cache: Cache, key: str, x: np.ndarray, k: int, opts: ReportOptions, seed: int, *, keep_index: bool = False
) -> tuple[NeighbourGraph, GraphQuality]:
    """The graph ``key`` names: read back, or built and stored (``keep_index``: with the index it
    was built with, if approximate, for the nearest rows of another set; else the index is let go)."""
    hit = cache.get_arrays("graphs", key)
    if hit is not None:
        arrays, meta = hit
        graph = NeighbourGraph(arrays["indices"].astype(np.int64), arrays["distances"], meta["metric"], meta["method"])
        return graph, GraphQuality(**meta["quality"])
    g, quality = build_graph(x, k, metric=opts.metric, method=_method(opts, len(x)), seed=seed)
    meta = {"metric": g.metric, "method": g.method, "quality": dataclasses.asdict(quality)}
    cache.put_arrays("graphs", key, {"indices": g.indices, "distances": g.distances}, meta)
    return (g if keep_index else dataclasses.replace(g, index=None)), quality


@dataclass(eq=False)
class LayerMaps:
    """What fitting one layer's maps reads: the layer, its PCA and its graph, with their keys."""

    opts: ReportOptions
    seed: int
    layer: str
    x: np.ndarray
    emb_key: str
    pca: PcaResult
    graph: NeighbourGraph
    graph_key: str
    labels: np.ndarray
    n_classes: int
    cache: Cache
    stages: Stages
    sample: MapSample | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.x) > self.opts.map_cap:
            self.sample = MapSample(self)

    def fit(
        self, reducers: list[Reducer], shared: set[str], *, need_transform: bool, fits: Callable[[], None]
    ) -> tuple[dict[str, MapResult], dict[str, FittedMap], list[str]]:
        """Every reducer's map (from the cache unless a comparison needs the fitted maps to place
        other samples), the maps fitted in this build and notes."""
        maps: dict[str, MapResult] = {}
        fitted: dict[str, FittedMap] = {}
        notes: list[str] = []
        for r in reducers:
            if r.name != "pca" and self.pca.total_variance <= 0:
                notes.append(f"{r.name} skipped: every sample has the same embedding, so there is nothing to map.")
                continue
            with self.stages.stage(f"reduce: {r.name}"):
                m, fm = self._one(r, r.name in shared, need_transform=need_transform)
                maps[r.name] = m
                if fm is not None:
                    fitted[r.name] = fm
                    if r.name != "pca":
                        fits()
        return maps, fitted, notes

    def _one(self, r: Reducer, use_graph: bool, *, need_transform: bool) -> tuple[MapResult, FittedMap | None]:
        capped = self.sample is not None and not r.fits_all
        inputs = [self.emb_key]
        if r.pca_components(self.x.shape[1]):
            inputs.append(pca_key(self.cache, self.emb_key, self.layer))
        if use_graph:
            inputs.append(self.sample.graph_key(r) if capped and self.sample is not None else self.graph_key)
        parts = {
            "layer": self.layer,
            "reducer": r.cache_parts(),
            "seed": self.seed,
            "pca": r.pca_components(self.x.shape[1]),
            **({"cap": self.opts.map_cap, "place_all": self.opts.place_all} if capped else {}),
        }
        key = self.cache.key("maps", parts, r.fingerprint(), inputs)
        if r.name != "pca" and not need_transform:
            hit = self.cache.get_arrays("maps", key)
            if hit is not None:
                arrays, meta = hit
                coords = arrays["coords"].astype(np.float32)
                m = MapResult(r.name, r.title, coords, meta["params"], tuple(meta["notes"]), r.caption,
                              arrays.get("fitted_rows"), meta.get("placement", ""), key)  # fmt: skip
                return m, None
        if capped and self.sample is not None:
            fm, m = self.sample.fit(r, use_graph)
        else:
            fm = call_fit(r, self.x, seed=self.seed, graph=self.graph if use_graph else None, pca=self.pca)
            coords = np.asarray(fm.coords, np.float32)
            m = MapResult(r.name, r.title, coords, dict(fm.params), tuple(fm.notes), r.caption)
        m = dataclasses.replace(m, key=key)
        if r.name != "pca":
            arrays = (
                {"coords": m.coords} if m.fitted_rows is None else {"coords": m.coords, "fitted_rows": m.fitted_rows}
            )
            meta = {"params": dict(m.params), "notes": list(m.notes), "placement": m.placement}
            self.cache.put_arrays("maps", key, arrays, meta)
        return m, fm


class MapSample:
    """Above ``report.map_cap`` samples, maps other than PCA are fitted on a seeded stratified
    sample; the rest are placed by the fitted map's transform (``place_all``) or at the
    inverse-distance-weighted mean of their 5 nearest fitted samples in PCA space (for the density
    layer of all N). Shared by every reducer of the layer: one sample, one placement index."""

    def __init__(self, layer: LayerMaps) -> None:
        self.layer = layer
        self.rows = stratified_rows(layer.labels, layer.n_classes, layer.opts.map_cap, layer.seed)
        self.rest = np.setdiff1d(np.arange(len(layer.x)), self.rows)
        self._xs: np.ndarray | None = None
        self._placement: tuple[np.ndarray, np.ndarray] | None = None
        self._graphs: dict[int, NeighbourGraph] = {}

    @property
    def xs(self) -> np.ndarray:
        if self._xs is None:
            self._xs = gather_rows(self.layer.x, self.rows)
        return self._xs

    def graph_key(self, r: Reducer) -> str:
        L = self.layer
        k = int(min(r.graph_neighbours(len(self.rows)), len(self.rows) - 1))
        sample = {"cap": L.opts.map_cap, "rows": len(self.rows), "stratified": True}
        return graph_key(L.cache, L.opts, len(self.rows), k, L.seed, L.emb_key, L.layer, sample)

    def fit(self, r: Reducer, use_graph: bool) -> tuple[FittedMap, MapResult]:
        L = self.layer
        opts, n, m = L.opts, len(L.x), len(self.rows)
        graph = None
        if use_graph:
            k = r.graph_neighbours(m)
            if k not in self._graphs:
                self._graphs[k], _ = neighbour_graph(L.cache, self.graph_key(r), self.xs, k, opts, L.seed)
            graph = self._graphs[k]
        sub = dataclasses.replace(L.pca, scores=L.pca.scores[self.rows])
        fm = call_fit(r, self.xs, seed=L.seed, graph=graph, pca=sub)
        coords = np.empty((n, 2), np.float32)
        coords[self.rows] = fm.coords
        if opts.place_all and fm.can_transform:
            for s in range(0, len(self.rest), 20_000):
                part = self.rest[s : s + 20_000]
                coords[part] = fm.transform(gather_rows(L.x, part))
            placement = "transform"
        else:
            if self._placement is None:
                z = L.pca.scores[:, : min(L.pca.k, 32)]
                self._placement = nearest_fitted(z, self.rows, self.rest)
            pos, w = self._placement
            coords[self.rest] = (fm.coords[pos] * w[:, :, None]).sum(1)
            placement = "nearest fitted samples"
        how = (
            "placed by the fitted map's transform"
            if placement == "transform"
            else "placed at the weighted mean of their 5 nearest fitted samples (PCA space), for the density layer only"
        )
        note = (
            f"fitted on a stratified sample of {m:,} of {n:,} samples (seed {L.seed}, report.map_cap); "
            f"the other {n - m:,} are {how}"
        )
        return fm, MapResult(
            r.name, r.title, coords, dict(fm.params), (note, *fm.notes), r.caption, self.rows, placement
        )
