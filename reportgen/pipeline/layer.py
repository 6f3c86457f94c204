"""One layer: its embeddings cleaned, its PCA, its one neighbour graph, every reducer's map, then
every layer analysis in order - each reading what the ones before it found."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analyses.base import ANALYSES, Analysis, LayerAnalysis, LayerInput, Where
from ..compute.neighbours import NeighbourGraph
from ..compute.pca import PcaResult, fit_pca
from ..compute.twins import TwinData
from ..reducers.base import FittedMap, make_reducer
from ..results import Finding, Headline, LayerResult, MetricValue, ModelRun, Samples, slug
from ..specification import ReportSpec
from ..store.cache import Cache
from ..streaming import cleaned
from ..summary import merge
from .maps import LayerMaps, graph_key, neighbour_graph
from .process import Stages

#: Each sample's nearest samples kept per layer for its card.
CARD_NEIGHBOURS = 5


@dataclass(frozen=True, eq=False)
class LayerWork:
    """What analysing one layer gives the later stages besides its result."""

    result: LayerResult
    fitted: Mapping[str, FittedMap]  # maps fitted in this build (they can place other samples)
    pca: PcaResult
    x: np.ndarray
    graph: NeighbourGraph
    headlines: tuple[Headline, ...]


def _cached(cache: Cache, emb_key: str, layer: str, code: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """An analysis's ``cached`` and ``cached_array``: values keyed by the layer's embeddings, the
    parts the analysis names and its code."""

    def cached(kind: str, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
        return cache.json(kind, cache.key(kind, {"layer": layer, **parts}, code, [emb_key]), compute)

    def cached_array(kind: str, parts: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        return cache.array(kind, cache.key(kind, {"layer": layer, **parts}, code, [emb_key]), compute)

    return cached, cached_array


def analyse_layer(
    spec: ReportSpec,
    run: ModelRun,
    layer: str,
    samples: Samples,
    analyses: list[LayerAnalysis],
    stages: Stages,
    cache: Cache,
    *,
    need_transform: bool,
    fits: Callable[[], None],
    audit: bool = False,
    twins: Callable[[], TwinData | None] = lambda: None,
) -> LayerWork:
    """PCA, the neighbour graph, every reducer's map and every layer analysis of one layer
    (``audit``: the layer the data audit and the slices run on)."""
    opts = spec.report
    emb = run.embeddings
    x, nonfinite = cleaned(
        emb.layers[layer], cache.root / "scratch"
    )  # streamed: no copy of a clean memory-mapped layer
    notes = []
    if nonfinite:
        notes.append(
            f"{nonfinite} sample(s) had NaN or Inf values in this layer; they were set to 0 for the analyses "
            "(check "
            "the model)."
        )
    n, dim = x.shape
    reducers = [make_reducer(p, opts) for p in spec.reducers]
    with stages.stage("reduce: pca"):
        k_needed = max([spec.pca.n_components, opts.gallery_components, 2] + [r.pca_components(dim) for r in reducers])
        pca = fit_pca(x, k_needed)
    if pca.total_variance <= 0:
        notes.append(
            "All samples have identical embeddings in this layer (zero variance): PCA components and maps carry no "
            "information."
        )
    # one neighbour graph per layer, in the report's metric: every kNN analysis reads it, and the
    # reducers that can use it (UMAP), unless a comparison needs their own index to place others
    audit = audit and opts.audit
    shared = {r.name for r in reducers if not need_transform and r.graph_neighbours(n) > 0}
    k = max(
        [a.graph_neighbours(n, audit=audit) for a in analyses]
        + [r.graph_neighbours(n) for r in reducers if r.name in shared]
    )
    with stages.stage("neighbours"):
        gkey = graph_key(cache, opts, n, int(min(k, n - 1)), spec.seed, emb.key, layer)
        # its index is kept only where the leak search asks it again: the audit layer, beside compared sets
        keep = audit and bool(spec.extra_datasets)
        graph, graph_quality = neighbour_graph(cache, gkey, x, k, opts, spec.seed, keep_index=keep)
    layer_maps = LayerMaps(
        opts, spec.seed, layer, x, emb.key, pca, graph, gkey, samples.labels, len(samples.class_names), cache, stages
    )
    maps, fitted, more = layer_maps.fit(reducers, shared, need_transform=need_transform, fits=fits)
    notes += more
    twin = None
    if audit:
        with stages.stage("audit: image signatures"):
            twin = twins()
    base = LayerInput(
        model=run.model.name,
        layer=layer,
        x=x,
        samples=samples,
        pca=pca,
        n_components=min(spec.pca.n_components, pca.k),
        graph=graph,
        graph_quality=graph_quality,
        maps=maps,
        options=opts,
        seed=spec.seed,
        audit=audit,
        twins=twin,
    )
    findings: dict[str, Finding] = {}
    metrics: dict[str, MetricValue] = {}
    done: dict[str, Analysis] = {}
    with stages.stage("analyse"):
        for analysis in analyses:
            cached, cached_array = _cached(cache, emb.key, layer, analysis.fingerprint())
            with stages.stage(f"analyse: {analysis.name}"):
                finding = analysis.run(dataclasses.replace(base, cached=cached, cached_array=cached_array), findings)
            if finding is not None:
                findings[analysis.name] = finding
                metrics.update(analysis.metric_values(finding))
                done[analysis.name] = analysis
    order = [name for name in ANALYSES if name in findings]  # the report's order (the registry's)
    summary: dict[str, Any] = {}
    for name in order:
        merge(summary, done[name].summary(findings[name], samples))
    anchor = f"l-{slug(run.model.name)}--{slug(layer)}"
    flags = tuple(
        dataclasses.replace(f, anchor=f"#{anchor}-{name}{f.anchor}")
        for name in order
        for f in done[name].flags(findings[name])
        if len(f.rows)
    )
    values = tuple(v for name in order for v in done[name].sample_values(findings[name]))
    sets = tuple(
        dataclasses.replace(
            s,
            key=f"{name}/{run.model.name}/{layer}/{s.key}",
            anchor=f"#{anchor}-{name}{s.anchor}",
            model=s.model or run.model.name,
        )
        for name in order
        for s in done[name].sets(findings[name])
        if len(s.rows)
    )
    result = LayerResult(
        model=run.model.name,
        layer=layer,
        reshape=emb.reshapes.get(layer) or "as computed",
        dim=int(dim),
        n=int(n),
        nonfinite_rows=nonfinite,
        notes=tuple(notes),
        maps=maps,
        findings={name: findings[name] for name in order},
        metrics=metrics,
        summary=summary,
        neighbours=np.ascontiguousarray(graph.indices[:, :CARD_NEIGHBOURS], np.int32),
        flags=flags,
        values=values,
        sets=sets,
    )
    headlines = []
    for name in order:
        where = Where(result.model, result.layer, f"l-{result.slug}-{name}", samples)
        headlines += done[name].headlines(findings[name], where)
    return LayerWork(result, fitted, pca, x, graph, tuple(headlines))
