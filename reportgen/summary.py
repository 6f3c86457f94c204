"""Summary: ``ReportData`` -> the plain dict written as summary.json (every number the report shows).

Produced once, from the results: each analysis's part (``Analysis.summary``, merged into
``LayerResult.summary`` and ``ReportData.build_summary`` as the analyses ran) and its metrics
(``LayerResult.metrics``). Deterministic: two builds of one spec give byte-identical JSON;
run-specific facts (timings, cache hits) go to run.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._version import __version__
from .report import ReportData
from .results import Headline, HtmlStats, LayerResult, ModelResult


def merge(into: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``part`` into ``into`` (nested dicts merge; other values replace)."""
    for k, v in part.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = dict(v) if isinstance(v, Mapping) else v
    return into


def layer_entry(lr: LayerResult, extra_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    entry = {
        "layer": lr.layer,
        "reshape": lr.reshape,
        "dim": lr.dim,
        "samples": lr.n,
        "nonfinite_rows": lr.nonfinite_rows,
        "notes": list(lr.notes),
    }
    merge(entry, lr.summary)
    entry["metrics"] = {**lr.metrics, **(extra_metrics or {})}
    return entry


def metrics_view(models: Iterable[ModelResult], build_metrics: Mapping | None = None) -> dict:
    """The part of summary.json that checks read: every model's layers and their metrics (with the
    metrics build analyses measured for them, e.g. a diff against the reference model)."""
    extra = build_metrics or {}
    return {
        "generator": "reportgen",
        "models": [
            {
                "name": m.model.name,
                "layers": [
                    {"layer": l.layer, "metrics": {**l.metrics, **extra.get(m.model.name, {}).get(l.layer, {})}}
                    for l in m.layers
                ],
            }
            for m in models
        ],
    }


def _finding(h: Headline, ids: tuple[str, ...], html: HtmlStats | None) -> dict[str, Any]:
    """A headline as summary.json lists it: with the samples it names and their cards' anchors."""
    cards = html.cards if html else {}
    return {**h.as_dict(), "samples": [{"id": ids[r], "card": cards.get(ids[r], "")} for r in h.rows]}


def summary_dict(report: ReportData, html: HtmlStats | None = None) -> dict[str, Any]:
    """Every number the report shows, deterministic: timings (and the bytes they take in the
    HTML) go to run.json, so two builds of one spec give byte-identical files."""
    spec = report.spec
    samples = report.samples
    ds = report.dataset
    stable = {k: v for k, v in (html.section_bytes.items() if html else ()) if k != "run timings"}
    out: dict[str, Any] = {
        "generator": "reportgen",
        "version": __version__,
        "title": spec.title,
        "seed": spec.seed,
        "dataset": {
            "name": ds.name,
            "kind": ds.kind,
            "fingerprint": ds.fingerprint,
            "classes": list(ds.class_names),
            "samples_used": len(samples.ids),
            "selection": ds.selection,
            "used_per_class": dict(ds.used_per_class),
            "total_per_class": dict(ds.total_per_class),
            "skipped": [{"id": i, "reason": r} for i, r in report.bad],
        },
        "findings": [_finding(h, samples.ids, html) for h in report.headlines],
        "models": [],
        "notes": list(report.notes),
        "html": {
            "bytes": sum(stable.values()),
            "section_bytes": stable,
            "reductions": list(html.reductions) if html else [],
        },
    }
    for m in report.models:
        info = m.model
        out["models"].append(
            {
                "name": info.name,
                "arch": info.arch,
                "source": info.source,
                "weights_sha256": info.weights_sha256,
                "preprocess": info.preprocess.as_dict() if info.preprocess else None,
                "embeddings_key": m.embeddings_key,
                "feeding": {**info.feeding, "precision": info.precision},
                "precision_agreement": {k: dict(v) for k, v in info.agreement.items()},
                "layers": [layer_entry(lr, report.build_metrics.get(info.name, {}).get(lr.layer)) for lr in m.layers],
            }
        )
    merge(out, report.build_summary)
    out["descriptions"] = [d.as_dict() for d in report.descriptions.values()]
    out["cards"] = dict(html.cards) if html else {}
    out["checks"] = [c.as_dict() for c in report.checks]
    out["check_specs"] = [c.model_dump(mode="json") for c in spec.checks]
    return out
