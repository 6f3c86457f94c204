"""The analysis registry: each analysis is one class that computes a frozen finding, contributes
its metrics and its part of summary.json, and names the template of its report section.

Layer analyses see one model's layer (``LayerInput``: embeddings, PCA, neighbour graph, maps) and
the findings of the analyses before them; build analyses see every model and dataset at once
(``BuildInput``: comparisons). The pipeline, summary.json and the report each loop over
``ANALYSES``; nothing lists the analyses anywhere else. To add one, copy ``analyses/axes.py``
(a layer section with a figure) and ``register_analysis`` it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..fingerprint import code_fingerprint
from ..neighbours import GraphQuality, NeighbourGraph
from ..pca import PcaResult
from ..results import Finding, Headline, LayerResult, MapResult, MetricValue, ModelRun, Samples


@dataclass(frozen=True, eq=False)
class LayerInput:
    """Everything a layer analysis may read. ``x`` is the layer's embeddings with non-finite values
    set to 0 (float32, possibly memory-mapped); ``pca`` holds every component any reader needs."""

    model: str
    layer: str
    x: np.ndarray
    samples: Samples
    pca: PcaResult
    n_components: int  # principal components the report shows (the spec's pca.n_components, at most pca.k)
    graph: NeighbourGraph
    graph_quality: GraphQuality  # exact, or approximate with its measured recall
    maps: Mapping[str, MapResult]
    options: Any  # the spec's ReportOptions
    seed: int
    cached: Callable[
        [str, dict, Callable[[], Any]], Any
    ]  # cached(kind, parts, compute): a JSON value by content and code
    cached_array: Callable[[str, dict, Callable[[], np.ndarray]], np.ndarray] = lambda kind, parts, compute: (
        compute()
    )  # the same for an array
    audit: bool = (
        False  # this is the layer the data audit and the slices run on (report.audit_layer, default the deepest)
    )
    twins: Any = None  # twins.TwinData of the dataset (image signatures, calibrated threshold) on the audit layer; None: no images

    @property
    def labels(self) -> np.ndarray:
        return self.samples.labels

    @property
    def n_classes(self) -> int:
        return len(self.samples.class_names)


@dataclass(frozen=True, eq=False)
class BuildInput:
    """Everything a build analysis may read: every model's layers, their embeddings and fitted maps."""

    runs: tuple[ModelRun, ...]
    layers: Mapping[tuple[str, str], LayerResult]  # (model, layer) -> result
    x: Callable[[str, str], np.ndarray]  # (model, layer) -> cleaned embeddings of the reference dataset
    fitted: Mapping[tuple[str, str], Mapping[str, Any]]  # (model, layer) -> {method: FittedMap}
    pca: Mapping[tuple[str, str], PcaResult]
    extra: tuple[tuple[str, tuple[ModelRun, ...]], ...]  # compared datasets: (name, one run per model)
    samples: Samples
    dataset_name: str
    reference: str
    options: Any
    seed: int
    graphs: Mapping[tuple[str, str], NeighbourGraph] = field(
        default_factory=dict
    )  # (model, layer) -> the layer's neighbour graph
    twins: Callable[[], Any] = lambda: (
        None
    )  # the reference dataset's twins.TwinData (made on first call), None without images


class Analysis:
    """Base of layer and build analyses (see ``LayerAnalysis`` and ``BuildAnalysis``)."""

    name: ClassVar[str]
    title: ClassVar[str]  # the section heading
    template: ClassVar[str]  # sections/<name>.html, rendered with ``s`` (the context) and ``l`` (the layer)
    #: metric name -> one sentence for the report's glossary; these names can be used in checks
    metrics: ClassVar[Mapping[str, str]] = {}
    #: analyses whose findings ``run`` reads (they run first)
    requires: ClassVar[tuple[str, ...]] = ()
    #: modules besides the class's own whose code shapes its results and figures (cache keys)
    code: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any, seed: int) -> None:
        self.options = options
        self.seed = seed

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return tuple(cls.metrics)

    @classmethod
    def fingerprint(cls) -> str:
        return code_fingerprint(cls, *cls.code)

    def metric_values(self, finding: Finding) -> dict[str, MetricValue]:
        """This analysis's entries in the layer's ``metrics`` (summary.json, checks, summary table)."""
        return {}

    def summary(self, finding: Finding, samples: Samples) -> dict:
        """JSON-ready entries merged into the layer's (or the build's) part of summary.json."""
        return {}

    def context(self, finding: Finding, view: Any) -> dict | None:
        """The template's context (``s``); None: the section is not shown."""
        return None

    def headlines(self, finding: Finding, where: Where) -> list[Headline]:
        """Findings for the top of the report: one sentence each, with severity and evidence."""
        return []


@dataclass(frozen=True, eq=False)
class Where:
    """Where a finding sits: its model and layer (empty for a build analysis), the anchor of its
    section (the evidence link) and the samples (labels and class names, for sentences)."""

    model: str
    layer: str
    anchor: str
    samples: Samples

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.samples.class_names

    def id(self, analysis: str, what: str) -> str:
        return "/".join(p for p in (analysis, self.model, self.layer, what) if p)


class LayerAnalysis(Analysis):
    def enabled(self, spec: Any) -> bool:
        return True

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> Finding | None:  # pragma: no cover - abstract
        raise NotImplementedError


class BuildAnalysis(Analysis):
    def layer_metrics(self, finding: Finding) -> dict[tuple[str, str], dict[str, MetricValue]]:
        """Metrics this build analysis measures for a model's layer (e.g. a diff against the
        reference): merged into that layer's ``metrics`` in summary.json, usable in checks."""
        return {}

    def enabled(self, spec: Any) -> bool:
        return True

    def run(self, build: BuildInput) -> Finding | None:  # pragma: no cover - abstract
        raise NotImplementedError


ANALYSES: dict[str, type[Analysis]] = {}


def register_analysis(cls: type[Analysis] | None = None, *, replace: bool = False, before: str | None = None):
    """Add an analysis class to the registry (usable as a decorator); ``before`` places its section
    ahead of an existing one (default: last)."""

    def add(c: type[Analysis]) -> type[Analysis]:
        for attr in ("name", "title", "template"):
            if not hasattr(c, attr):
                raise TypeError(f"analysis {c.__name__} must define {attr!r}")
        if c.run in (LayerAnalysis.run, BuildAnalysis.run) or not issubclass(c, (LayerAnalysis, BuildAnalysis)):
            raise TypeError(f"analysis {c.name} must subclass LayerAnalysis or BuildAnalysis and implement run()")
        if c.name in ANALYSES and not replace and ANALYSES[c.name] is not c:
            raise ValueError(f"an analysis named {c.name!r} is registered already; pass replace=True to override it")
        ANALYSES.pop(c.name, None)
        if before is not None and before in ANALYSES:
            items = list(ANALYSES.items())
            i = [k for k, _ in items].index(before)
            items.insert(i, (c.name, c))
            ANALYSES.clear()
            ANALYSES.update(items)
        else:
            ANALYSES[c.name] = c
        return c

    return add if cls is None else add(cls)


def unregister_analysis(name: str) -> None:
    ANALYSES.pop(name, None)


def get_analysis(name: str) -> type[Analysis]:
    try:
        return ANALYSES[name]
    except KeyError:
        hint = difflib.get_close_matches(name, list(ANALYSES), n=1)
        raise KeyError(f"no analysis {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")) from None


def layer_analyses() -> list[type[LayerAnalysis]]:
    return [c for c in ANALYSES.values() if issubclass(c, LayerAnalysis)]


def build_analyses() -> list[type[BuildAnalysis]]:
    return [c for c in ANALYSES.values() if issubclass(c, BuildAnalysis)]


def run_order(classes: list[type[Analysis]]) -> list[type[Analysis]]:
    """The classes in registry order, each after the analyses it ``requires``."""
    by_name = {c.name: c for c in classes}
    out: list[type[Analysis]] = []

    def visit(c: type[Analysis], path: tuple[str, ...]) -> None:
        if c in out:
            return
        if c.name in path:
            raise ValueError(f"analyses require each other in a circle: {' -> '.join(path + (c.name,))}")
        for r in c.requires:
            if r in by_name:
                visit(by_name[r], path + (c.name,))
        out.append(c)

    for c in classes:
        visit(c, ())
    return out


def check_metric_names() -> tuple[str, ...]:
    """Every metric a check can name, from every registered analysis."""
    out: list[str] = []
    for c in ANALYSES.values():
        out += [m for m in c.metric_names() if m not in out]
    return tuple(out)


def metric_docs() -> dict[str, str]:
    out: dict[str, str] = {}
    for c in ANALYSES.values():
        out.update(c.metrics)
    return out
