"""The report as data: everything the render and summary.json read (``ReportData``), and what
``build`` hands back (``BuildResult``). Above the stages' own results (``reportgen.results``) because
it holds the spec the report was built from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .results import (
    CheckResult,
    DatasetInfo,
    Description,
    Finding,
    Headline,
    HtmlStats,
    LayerResult,
    MetricValue,
    ModelResult,
    RunStats,
    SampleFlag,
    Samples,
)

if TYPE_CHECKING:  # annotations only: the figures' code fingerprint must not follow the spec to the reducers
    from .specification import ReportSpec


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything the report shows; the input of render and of summary.json."""

    spec: ReportSpec
    dataset: DatasetInfo
    samples: Samples
    models: tuple[ModelResult, ...]
    build_findings: Mapping[str, Finding]  # build-scope analyses (model / dataset comparison)
    bad: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]
    checks: tuple[CheckResult, ...]
    stats: RunStats
    versions: Mapping[str, str]
    headlines: tuple[Headline, ...] = ()  # the findings, ranked: what is wrong and where
    #: model -> layer -> metrics that build analyses measured for it (a diff against the reference)
    build_metrics: Mapping[str, Mapping[str, Mapping[str, MetricValue]]] = field(default_factory=dict)
    build_summary: Mapping[str, Any] = field(default_factory=dict)  # the build analyses' part of summary.json
    build_flags: tuple[SampleFlag, ...] = ()  # what the build analyses say of samples (anchors resolved)
    descriptions: Mapping[str, Description] = field(default_factory=dict)  # set key -> what it shares, in words

    @property
    def layers(self) -> tuple[LayerResult, ...]:
        return tuple(l for m in self.models for l in m.layers)


@dataclass(frozen=True, eq=False)
class BuildResult:
    """What ``reportgen.build`` returns: the report's data, its checks and where it was written."""

    report: ReportData
    html: HtmlStats | None  # None when nothing was rendered (write=False)
    output_dir: Path | None

    @property
    def spec(self) -> ReportSpec:
        return self.report.spec

    @property
    def models(self) -> tuple[ModelResult, ...]:
        return self.report.models

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return self.report.checks

    @property
    def checks_failed(self) -> list[CheckResult]:
        return [c for c in self.report.checks if not c.passed]

    @property
    def stats(self) -> RunStats:
        return self.report.stats

    @property
    def forward_calls(self) -> int:
        return self.report.stats.forward_calls

    @property
    def reducer_fits(self) -> int:
        return self.report.stats.reducer_fits

    @property
    def ids(self) -> tuple[str, ...]:
        return self.report.samples.ids

    @property
    def html_bytes(self) -> int:
        return self.html.html_bytes if self.html else 0
