"""The analysis registry: each analysis is one class that computes a frozen finding and says what
it found - its metrics, its part of summary.json, its headlines - in numbers and sample rows. It
draws nothing: its report section (``reportgen.sections``, registered under the same name) turns
the finding into a template context and figures.

Layer analyses see one model's layer (``LayerInput``: embeddings, PCA, neighbour graph, maps) and
the findings of the analyses before them; build analyses see every model and dataset at once
(``BuildInput``: comparisons). The pipeline instantiates the enabled ones once per build, in
``run_order``. To add one, copy ``analyses/axes.py`` with ``sections/axes.py`` and register both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..errors import ReportgenError
from ..fingerprint import code_fingerprint
from ..registry import Registry
from ..results import (
    Finding,
    Headline,
    LayerResult,
    MapResult,
    MetricValue,
    ModelRun,
    SampleFlag,
    Samples,
    SampleSet,
    SampleValues,
    slug,
)

if TYPE_CHECKING:  # annotations only: no part of what an analysis computes comes from these modules
    from ..compute.neighbours import GraphQuality, NeighbourGraph
    from ..compute.pca import PcaResult
    from ..compute.twins import TwinData
    from ..options import ReportOptions
    from ..reducers.base import FittedMap
    from ..specification import ReportSpec

#: ``cached(kind, parts, compute)``: a JSON value (or an array) by the layer's embeddings, ``parts``
#: and the analysis's code; computed once, read back by later builds.
Cached = Callable[[str, dict[str, Any], Callable[[], Any]], Any]


def _uncached(kind: str, parts: dict[str, Any], compute: Callable[[], Any]) -> Any:
    return compute()


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
    options: ReportOptions
    seed: int
    cached: Cached = _uncached
    cached_array: Cached = _uncached
    audit: bool = False  # the layer the data audit and the slices run on (report.audit_layer, default the deepest)
    twins: TwinData | None = None  # the dataset's image signatures and twin threshold (audit layer; None: no images)

    @property
    def labels(self) -> np.ndarray:
        return self.samples.labels

    @property
    def n_classes(self) -> int:
        return len(self.samples.class_names)


@dataclass(frozen=True, eq=False)
class BuildInput:
    """Everything a build analysis may read: every model's layers, their embeddings and fitted maps,
    and the compared datasets' embeddings."""

    runs: tuple[ModelRun, ...]
    layers: Mapping[tuple[str, str], LayerResult]  # (model, layer) -> result
    x: Callable[[str, str], np.ndarray]  # (model, layer) -> cleaned embeddings of the reference dataset
    fitted: Mapping[tuple[str, str], Mapping[str, FittedMap]]  # (model, layer) -> {method: fitted map}
    pca: Mapping[tuple[str, str], PcaResult]
    extra: tuple[tuple[str, tuple[ModelRun, ...]], ...]  # compared datasets: (name, one run per model)
    samples: Samples
    dataset_name: str
    reference: str
    options: ReportOptions
    seed: int
    graphs: Mapping[tuple[str, str], NeighbourGraph] = field(default_factory=dict)
    twins: Callable[[], TwinData | None] = lambda: None  # the reference dataset's (made on first call)
    #: each compared dataset's own class names, in the order of ``extra`` (its labels index these, not the reference's)
    extra_class_names: tuple[tuple[str, ...], ...] = ()


#: Samples a headline names (its ``rows``): the report shows them beside the sentence, linked to their cards.
HEADLINE_SAMPLES = 6


@dataclass(frozen=True)
class Column:
    """A column of the report's overview table (one row per layer): a metric and how to show it."""

    metric: str
    heading: str
    format: Literal["num", "num1", "pct", "int"] = "num"  # num: 3 decimals, num1: 1
    order: int = 50  # columns sort by this, then by the registry's order (the space's shape, quality, maps)


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


class Analysis:
    """Base of layer and build analyses (see ``LayerAnalysis`` and ``BuildAnalysis``).

    The constructor only stores the options (scikit-learn's rule); ``run`` does the work.
    """

    name: ClassVar[str]
    title: ClassVar[str]  # what the analysis is called in the report and in the stage timings
    #: metric name -> one sentence for the report's glossary; these names can be used in checks
    metrics: ClassVar[Mapping[str, str]] = {}
    #: the overview table's columns this analysis fills (one row per layer), in order
    overview: ClassVar[tuple[Column, ...]] = ()
    #: analyses whose findings ``run`` reads (they run first)
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: ReportOptions, seed: int) -> None:
        self.options = options
        self.seed = seed

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return tuple(cls.metrics)

    @classmethod
    def columns(cls) -> tuple[Column, ...]:
        """The overview columns (a class whose metrics depend on the registries overrides this)."""
        return cls.overview

    @classmethod
    def fingerprint(cls) -> str:
        """The code that makes this analysis's results: its module and what that imports."""
        return code_fingerprint(cls)

    def enabled(self, spec: ReportSpec) -> bool:
        return True

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        """How many neighbours of the layer's graph ``run`` reads (``audit``: this is the audit layer)."""
        return 0

    def metric_values(self, finding: Any) -> dict[str, MetricValue]:
        """This analysis's entries in the layer's ``metrics`` (summary.json, checks, the overview)."""
        return {}

    def summary(self, finding: Any, samples: Samples) -> dict[str, Any]:
        """JSON-ready entries merged into the layer's (or the build's) part of summary.json."""
        return {}

    def headlines(self, finding: Any, where: Where) -> list[Headline]:
        """Findings for the top of the report: one sentence each, with severity and evidence."""
        return []

    def flags(self, finding: Any) -> list[SampleFlag]:
        """What the finding says of particular samples ("likely label error": rows), each with the
        anchor suffix of the part of its section that shows them: their sample cards list it."""
        return []

    def sample_values(self, finding: Any) -> list[SampleValues]:
        """Per-sample values worth a line on every sample's card ("label support")."""
        return []

    def sets(self, finding: Any) -> list[SampleSet]:
        """Sets of samples the report should put into words (a component's end, a slice): keys
        unique within the analysis, anchors as suffixes of its section's (like ``flags``)."""
        return []


class LayerAnalysis(Analysis):
    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> Finding | None:  # pragma: no cover - abstract
        raise NotImplementedError


class BuildAnalysis(Analysis):
    def layer_metrics(self, finding: Any) -> dict[tuple[str, str], dict[str, MetricValue]]:
        """Metrics this build analysis measures for a model's layer (e.g. a diff against the
        reference): merged into that layer's ``metrics`` in summary.json, usable in checks."""
        return {}

    def run(self, build: BuildInput) -> Finding | None:  # pragma: no cover - abstract
        raise NotImplementedError


ANALYSES: Registry[type[Analysis]] = Registry("analysis", error=ReportgenError)


def register_analysis(cls: type[Analysis] | None = None, *, replace: bool = False, before: str | None = None) -> Any:
    """Add an analysis class to the registry (usable as a decorator); ``before`` places its section
    ahead of an existing one (default: last). Its section is registered with ``register_section``."""

    def add(c: type[Analysis]) -> type[Analysis]:
        for attr in ("name", "title"):
            if not hasattr(c, attr):
                raise TypeError(f"analysis {c.__name__} must define {attr!r}")
        run = getattr(c, "run", None)
        implemented = run is not None and run not in (LayerAnalysis.run, BuildAnalysis.run)
        if not implemented or not issubclass(c, (LayerAnalysis, BuildAnalysis)):
            raise TypeError(f"analysis {c.name} must subclass LayerAnalysis or BuildAnalysis and implement run()")
        return ANALYSES.register(c.name, c, replace=replace, before=before)

    return add if cls is None else add(cls)


def unregister_analysis(name: str) -> None:
    ANALYSES.unregister(name)


def metric_anchor(metric: str, model: str, layer: str) -> str:
    """Where in the report a metric of a layer is shown: the section of the analysis that measures
    it (a build analysis's own section), else the layer's part of the report."""
    at = f"#l-{slug(model)}--{slug(layer)}"
    for cls in ANALYSES.values():
        if metric in cls.metrics or any(c.metric == metric for c in cls.columns()):
            return f"#{cls.name}" if issubclass(cls, BuildAnalysis) else f"{at}-{cls.name}"
    return at


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
            raise ValueError(f"analyses require each other in a circle: {' -> '.join((*path, c.name))}")
        for r in c.requires:
            if r in by_name:
                visit(by_name[r], (*path, c.name))
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
