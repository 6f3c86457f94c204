"""``build(spec)``: the one place that knows the order of the stages.

    embed every dataset with every model -> analyse each layer -> analyse the build as a whole
    (comparisons) -> check -> render -> write

From the Python API a build leaves the caller's process as it found it; the CLI opts in to
process-wide housekeeping (``ProcessHooks``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.base import (
    BuildAnalysis,
    BuildInput,
    LayerAnalysis,
    Where,
    build_analyses,
    layer_analyses,
    metric_anchor,
    run_order,
)
from ..catalog import check_names
from ..checks import evaluate, junit_xml, read_summary
from ..compute.kernels import image_statistics
from ..compute.twins import TwinData
from ..errors import DataError, ReportgenError, SpecError
from ..machine import keeps_process
from ..output import check_output_dir, write_report
from ..render import render_report
from ..report import BuildResult, ReportData
from ..results import DatasetInfo, Headline, ModelResult, ModelRun, RunStats, SampleFlag, Samples, SampleSet
from ..specification import ReportSpec
from ..store.cache import Cache
from ..summary import merge, metrics_view, summary_dict
from .describe import PlacedSet, describe_sets
from .embedding import Embedded, embed_datasets
from .layer import LayerWork, analyse_layer
from .process import ProcessHooks, Stages, library_versions

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


def as_path(value: str | os.PathLike[str] | None) -> Path | None:
    """Every path the Python API takes may be a ``str`` or any ``os.PathLike``."""
    return None if value is None else Path(os.fspath(value))


@dataclass(frozen=True)
class Plan:
    """The analyses a spec enables, instantiated once per build, in the order they run."""

    layer: list[LayerAnalysis]
    build: list[BuildAnalysis]

    @classmethod
    def of(cls, spec: ReportSpec) -> Plan:
        def enabled(classes: list[Any]) -> list[Any]:
            made = [c(spec.report, spec.seed) for c in run_order(classes)]
            return [a for a in made if a.enabled(spec)]

        return cls(enabled(layer_analyses()), enabled(build_analyses()))


@dataclass
class _Counts:
    """What a build did that run.json reports: reducer fits."""

    fits: int = 0
    stages: Stages = field(default_factory=Stages)

    def fit(self) -> None:
        self.fits += 1


@keeps_process
def build(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    modules: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    write: bool = True,
    output_dir: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
    hooks: ProcessHooks | None = None,
) -> BuildResult:
    """Embed every dataset with every model, analyse every layer and then the build as a whole,
    evaluate the checks, render, and write ``report.html``, ``summary.json``, ``run.json``,
    ``figures/`` (and ``checks.xml``) atomically. Failed checks do not raise: see
    ``BuildResult.checks_failed`` (the CLI exits 3). Paths may be ``str`` or ``os.PathLike``."""
    counts = _Counts(stages=Stages(hooks))
    stages = counts.stages
    out_dir = as_path(output_dir) or spec.output.dir
    cache_root = as_path(cache_dir) or spec.cache_dir
    if write:
        check_output_dir(out_dir)
    check_names(spec)
    data = embed_datasets(
        spec,
        use_cache=use_cache,
        cache_dir=cache_root,
        modules=modules,
        max_samples=max_samples,
        progress=progress,
        stages=stages,
    )
    cache = Cache(cache_root, enabled=use_cache)
    samples = _samples(data, stages, cache, spec)
    plan = Plan.of(spec)
    twins = _twin_data(spec, data, cache, samples.properties)
    work = _analyse_layers(spec, data, samples, plan, cache, counts, twins)
    built = _analyse_build(spec, data, samples, work, plan, stages, twins)
    build_findings, build_metrics, build_summary, build_headlines, build_flags, build_sets = built
    placed = [
        PlacedSet(s, f"{w.result.model} · {w.result.layer}", s.model) for w in work.values() for s in w.result.sets
    ]
    placed += [PlacedSet(s, "", s.model) for s in build_sets]
    with stages.stage("describe"):
        descriptions, describe_headlines = describe_sets(spec, data, placed, cache, samples.labels, samples.properties)
    models = tuple(
        ModelResult(
            run.model,
            run.embeddings.key,
            run.embeddings.origin,
            run.embeddings.forward_calls,
            tuple(w.result for (m, _), w in work.items() if m == run.model.name),
        )  # fmt: skip
        for run in data.runs
    )
    checks: tuple[Any, ...] = ()
    if spec.checks:
        with stages.stage("checks"):
            ref = read_summary(as_path(baseline), what="--baseline") if baseline is not None else None  # type: ignore[arg-type]
            checks = tuple(
                replace(c, evidence=metric_anchor(c.metric, c.model, c.layer))
                for c in evaluate(metrics_view(models, build_metrics), spec.checks, baseline=ref)
            )
    headlines = _ranked([h for w in work.values() for h in w.headlines] + build_headlines + describe_headlines, checks)
    ds, sel = data.ds, data.selection
    dataset = DatasetInfo(
        ds.name,
        ds.kind,
        ds.fingerprint,
        ds.class_names,
        sel.method,
        sel.used_per_class,
        sel.total_per_class,
        ds.has_images,
    )
    notes = (f"{len(data.runs[0].embeddings.bad)} image(s) could not be read and were skipped (listed under Data).",)
    report = ReportData(
        spec=spec,
        dataset=dataset,
        samples=samples,
        models=models,
        build_findings=build_findings,
        bad=data.runs[0].embeddings.bad,
        notes=notes if data.runs[0].embeddings.bad else (),
        checks=checks,
        stats=_stats(data, counts, cache),
        versions=library_versions(),
        headlines=headlines,
        build_metrics=build_metrics,
        build_summary=build_summary,
        build_flags=build_flags,
        descriptions=descriptions,
    )
    if not write:
        return BuildResult(report, None, None)
    with stages.stage("render"):
        rendered = render_report(report, figure_cache=_FigureCache(cache))
    summary = summary_dict(report, rendered.stats)
    final = _stats(data, counts, cache)
    run_info = {
        "html_bytes": rendered.stats.html_bytes,
        "section_bytes": dict(rendered.stats.section_bytes),
        "timings_s": dict(final.timings),
        "peak_rss_mb": dict(final.peak_rss_mb),
        "forward_calls": final.forward_calls,
        "reducer_fits": final.reducer_fits,
        "from_cache": {m.model.name: m.origin == "cache" for m in models},
        "computed": dict(final.computed),
        "reused": dict(final.reused),
        "figures": {"drawn": list(rendered.stats.figures_drawn), "reused": list(rendered.stats.figures_reused)},
    }
    with stages.stage("write"):
        write_report(
            out_dir,
            html=rendered.html,
            summary=summary,
            run=run_info,
            figures=rendered.figures if spec.output.figures else None,
            checks_xml=junit_xml(list(checks)) if spec.checks else None,
        )
    return BuildResult(replace(report, stats=_stats(data, counts, cache)), rendered.stats, out_dir)


def _samples(data: Embedded, stages: Stages, cache: Cache, spec: ReportSpec) -> Samples:
    """The rows every model describes (the same for every model: a sample unreadable for one is
    unreadable for all), with the image statistics of their thumbnails and, where the audit or the
    describers read them, the properties of the decoded images."""
    base = data.runs[0].embeddings
    if any(r.embeddings.ids != base.ids for r in data.runs[1:]):
        raise ReportgenError("models saw different samples; this should not happen, please report it")
    labels = np.asarray(base.labels)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        raise DataError(
            f"dataset: only {len(labels)} readable sample(s) in {len(np.unique(labels))} class(es) remain after "
            "skipping bad images; a report needs two classes"
        )
    with stages.stage("analyse: image statistics"):
        stats = image_statistics(base.thumbnails)
    metadata = {
        str(column): tuple("" if values[i] is None else str(values[i]) for i in np.asarray(base.indices))
        for column, values in data.ds.metadata.items()
    }
    properties = None
    wanted = spec.report.audit or "image" in spec.report.describe.describers
    if data.ds.has_images and wanted:
        with stages.stage("analyse: image properties"):
            properties = image_properties_of(data.ds, np.asarray(base.indices), cache)
    return Samples(
        base.ids,
        labels,
        data.ds.class_names,
        base.thumbnails,
        stats,
        hashes=base.hashes,
        metadata=metadata,
        properties=properties,
    )


def image_properties_of(ds: Any, indices: np.ndarray, cache: Cache) -> np.ndarray:
    """The properties of the decoded images (``compute.properties``), kept in the cache."""
    from ..compute.properties import image_properties
    from ..fingerprint import code_fingerprint

    key = cache.key(
        "image-properties",
        {"dataset": ds.fingerprint, "rows": indices},
        code_fingerprint("reportgen.compute.properties"),
        [],
    )
    return cache.array("image-properties", key, lambda: image_properties(ds.read, indices, getattr(ds, "array", None)))


def _analyse_layers(
    spec: ReportSpec,
    data: Embedded,
    samples: Samples,
    plan: Plan,
    cache: Cache,
    counts: _Counts,
    twins: Callable[[], TwinData | None],
) -> dict[tuple[str, str], LayerWork]:
    """Every layer of every model, in order; the data audit and the slices on each model's audit layer."""
    need_transform = len(data.runs) > 1 or bool(spec.extra_datasets)
    work = {}
    for run in data.runs:
        audit_layer = _audit_layer(spec, run)
        for layer in run.embeddings.layers:
            work[(run.model.name, layer)] = analyse_layer(
                spec, run, layer, samples, plan.layer, counts.stages, cache,
                need_transform=need_transform, fits=counts.fit, audit=layer == audit_layer, twins=twins,
            )  # fmt: skip
    return work


def _analyse_build(
    spec: ReportSpec,
    data: Embedded,
    samples: Samples,
    work: dict[tuple[str, str], LayerWork],
    plan: Plan,
    stages: Stages,
    twins: Callable[[], TwinData | None],
) -> tuple[
    dict[str, Any],
    dict[str, dict[str, dict[str, Any]]],
    dict[str, Any],
    list[Headline],
    tuple[SampleFlag, ...],
    tuple[SampleSet, ...],
]:
    """The build analyses (comparisons of models and datasets): findings, the metrics they measure
    for each layer, their part of summary.json, their headlines and what they say of samples."""
    build_input = BuildInput(
        runs=data.runs,
        layers={k: w.result for k, w in work.items()},
        x=lambda m, l: work[(m, l)].x,
        fitted={k: w.fitted for k, w in work.items()},
        pca={k: w.pca for k, w in work.items()},
        extra=data.compared,
        extra_class_names=tuple(d.class_names for d in data.compared_data),
        samples=samples,
        dataset_name=data.ds.name,
        reference=spec.reference,
        options=spec.report,
        seed=spec.seed,
        graphs={k: w.graph for k, w in work.items()},
        twins=twins,
    )
    findings: dict[str, Any] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    summary: dict[str, Any] = {}
    headlines: list[Headline] = []
    flags: list[SampleFlag] = []
    sets: list[SampleSet] = []
    for analysis in plan.build:
        with stages.stage(analysis.title.lower()):
            finding = analysis.run(build_input)
        if finding is None:
            continue
        findings[analysis.name] = finding
        for (m, l), values in analysis.layer_metrics(finding).items():
            metrics.setdefault(m, {}).setdefault(l, {}).update(values)
        merge(summary, analysis.summary(finding, samples))
        headlines += analysis.headlines(finding, Where("", "", analysis.name, samples))
        flags += [replace(f, anchor=f"#{analysis.name}{f.anchor}") for f in analysis.flags(finding) if len(f.rows)]
        sets += [
            replace(s, key=f"{analysis.name}/{s.key}", anchor=f"#{analysis.name}{s.anchor}")
            for s in analysis.sets(finding)
            if len(s.rows)
        ]
    return findings, metrics, summary, headlines, tuple(flags), tuple(sets)


def _audit_layer(spec: ReportSpec, run: ModelRun) -> str | None:
    """The layer the data audit and the slices run on: report.audit_layer, else the deepest."""
    layers = list(run.embeddings.layers)
    if not layers:
        return None
    if spec.report.audit_layer is not None:
        if spec.report.audit_layer not in layers:
            hint = difflib.get_close_matches(spec.report.audit_layer, layers, n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else f" ({', '.join(layers)})"
            raise SpecError(f"report.audit_layer: {spec.report.audit_layer!r} is not a layer of {run.model.name}{more}")
        return spec.report.audit_layer
    index: dict[str, int] = dict(run.embeddings.manifest.get("layer_index") or {})  # type: ignore[call-overload]
    return max(layers, key=lambda l: (index.get(l, -1), layers.index(l)))


def _twin_data(
    spec: ReportSpec, data: Embedded, cache: Cache, properties: np.ndarray | None
) -> Callable[[], TwinData | None]:
    """The reference dataset's image signatures and near-duplicate calibration, made on first use
    (once for every model and for the build analyses) and only for a dataset with images. The
    calibration (copies of 300 images in 13 edit families, compared) is kept in the cache: a
    rebuild that changes a title does not redo it. The signatures are made at the images' own
    size where their thumbnails only enlarge them (``properties``: theirs, for their size)."""
    memo: list[TwinData | None] = []

    def get() -> TwinData | None:
        if not memo:
            memo.append(_twins_of(spec, data, cache, properties))
        return memo[0]

    return get


def _twins_of(spec: ReportSpec, data: Embedded, cache: Cache, properties: np.ndarray | None) -> TwinData | None:
    from ..compute.properties import square_side
    from ..compute.twin_calibration import calibrate
    from ..compute.twins import Calibration, signature_side, signatures
    from ..fingerprint import code_fingerprint

    emb, ds = data.runs[0].embeddings, data.ds
    if not (ds.has_images and emb.thumbnails is not None and len(emb.indices) > 1):
        return None
    sig = signatures(emb.thumbnails, signature_side(square_side(properties), spec.report.thumbnail_px))
    rows = np.asarray(emb.indices)
    parts = {
        "dataset": ds.fingerprint,
        "rows": rows,
        "thumbnail_px": spec.report.thumbnail_px,
        "signature_px": sig.shape[1],
        "seed": spec.seed,
        "mirrors": spec.report.mirrored_copies,
    }
    key = cache.key("twin-calibration", parts, code_fingerprint("reportgen.compute.twin_calibration"), [])

    def made() -> dict[str, Any] | None:
        cal = calibrate(
            ds.read,
            rows,
            spec.report.thumbnail_px,
            seed=spec.seed,
            signatures_of_rows=sig,
            mirrors=spec.report.mirrored_copies,
        )
        return None if cal is None else asdict(cal)

    kept = cache.json("twin-calibration", key, made)
    return None if kept is None else TwinData(sig, Calibration(**kept), spec.seed)


def _ranked(headlines: list[Headline], checks: tuple[Any, ...]) -> tuple[Headline, ...]:
    """Every analysis's findings and every failed check, ranked: severity, then size, then id."""
    out = list(headlines)
    for c in checks:
        if not c.passed:
            out.append(
                Headline(
                    f"check/{c.name}/{c.model}/{c.layer}",
                    "high",
                    f"Check {c.name!r} failed: {c.message}.",
                    "#checks",
                    1.0,
                )
            )
    return tuple(sorted(out, key=lambda h: (SEVERITY_RANK.get(h.severity, 9), -h.value, h.id)))


def _stats(data: Embedded, counts: _Counts, cache: Cache) -> RunStats:
    runs = [*data.runs, *(r for _, xr in data.compared for r in xr)]
    return RunStats(
        dict(counts.stages.timings),
        dict(counts.stages.rss),
        sum(r.embeddings.forward_calls for r in runs),
        counts.fits,
        dict(cache.computed),
        dict(cache.reused),
    )


class _FigureCache:
    """The render's figure memo, on disk under the cache (kind ``figures``)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def get(self, key: str) -> bytes | None:
        return self.cache.get_bytes("figures", key)

    def put(self, key: str, data: bytes) -> None:
        self.cache.put_bytes("figures", key, data)
