"""Render: ``ReportData`` -> one self-contained HTML text and figure bytes. No file I/O.

One Jinja environment with autoescape and ``StrictUndefined``; every image is a data URI; a
Content-Security-Policy meta tag forbids every external load. Each finding is shown by the section
registered under its analysis's name (``reportgen.sections``): the section draws its figures and
gives its template a context. The overview table's columns come from the analyses (``columns``),
so no template names a metric. If the HTML would exceed ``output.max_html_mb``, mosaics are capped
and images recompressed step by step until it fits, and the report says what was reduced.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ._version import __version__
from .analyses.base import ANALYSES, Column, metric_docs
from .figures import hex_colour, palette
from .fingerprint import code_fingerprint
from .interactive import island, island_json, linked_rows, point_rows, script, script_hash
from .report import ReportData
from .resources import templates_dir
from .results import HtmlStats, LayerResult, card_anchor, difference, percent
from .sections import SECTIONS, Budget, FigureCache, Figures, Thumbs, View
from .sections.cards import CardIndex, card_contexts
from .sections.view import digest

log = logging.getLogger(__name__)


def csp(scripts: tuple[str, ...] = ()) -> str:
    """The page's Content-Security-Policy: nothing from anywhere, images only as data URIs, and
    scripts only by the hash of the report's own (none when the report has no script)."""
    allowed = " ".join(script_hash(s) for s in scripts) or "'none'"
    return (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; script-src {allowed}; "
        "connect-src 'none'; form-action 'none'; base-uri 'none'"
    )


CSP = csp()

#: The size ladder: the interactive layer's detail goes first (its points, the dots a map links to
#: cards, the neighbours a card lists), the evidence after it (mosaics, galleries, thumbnails).
LADDER = (
    Budget(1.0, 1.0, 85, 85, 1.0, ""),
    Budget(
        1.0, 1.0, 85, 85, 1.0, "the interactive maps hold half the points and link half as many dots to cards",
        points=0.5, linked=0.5, atlas_quality=65,
    ),
    Budget(
        1.0, 1.0, 85, 85, 1.0,
        "the interactive maps hold a tenth of the points and link a tenth as many dots to cards, cards list two "
        "nearest samples per layer",
        points=0.1, linked=0.1, atlas_quality=50, card_neighbours=2,
    ),
    Budget(
        0.5, 0.7, 75, 80, 1.0,
        "the interactive layer reduced, mosaics capped at half the samples, JPEG quality 75",
        points=0.1, linked=0.1, atlas_quality=50, card_neighbours=2,
    ),
    Budget(
        0.25, 0.45, 65, 70, 0.75,
        "the interactive layer reduced, mosaics capped at a quarter of the samples, JPEG quality 65, galleries "
        "shortened by a quarter",
        points=0.1, linked=0.1, atlas_quality=50, card_neighbours=2,
    ),
    Budget(
        0.12, 0.25, 55, 60, 0.5,
        "the interactive layer reduced, mosaics capped at an eighth of the samples, JPEG quality 55, galleries halved",
        points=0.1, linked=0.1, atlas_quality=50, card_neighbours=2,
    ),
)  # fmt: skip


class Page(NamedTuple):
    """One rendering at one size step."""

    html: str
    files: dict[str, bytes]
    section_bytes: dict[str, int]
    cards: dict[str, str]  # sample id -> its card's anchor


@dataclass(frozen=True)
class Rendered:
    html: str
    figures: Mapping[str, bytes]  # file name -> PNG bytes (written to figures/)
    stats: HtmlStats


def _pct(v: float | None, d: int = 1) -> str:
    return "n/a" if v is None else percent(float(v), d)


def _num(v: float | None, d: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{d}f}"


def _thousands(v: int) -> str:
    """A count as the headlines write it: 13,821, not 13821."""
    return f"{int(v):,}"


def _isolated(text: str) -> Markup:
    """Text in its own direction (``<bdi>``) when it may hold right-to-left letters: a Hebrew class
    name in a list keeps the list's order; plain ASCII goes as it is (no bytes spent)."""
    text = str(text)
    return Markup.escape(text) if text.isascii() else Markup("<bdi>%s</bdi>") % text


@functools.lru_cache(maxsize=8)
def environment(overrides: Path | None = None) -> Environment:
    """Templates from ``overrides`` (a team's folder: branding, an extra section) first, then the
    built-in ones; autoescape and StrictUndefined either way. One environment per folder for the
    process: Jinja keeps the templates it compiled (0.7 s of a small build's render) and recompiles
    one whose file changed."""
    loaders = [FileSystemLoader(str(overrides))] if overrides is not None else []
    env = Environment(
        loader=ChoiceLoader([*loaders, FileSystemLoader(str(templates_dir()))]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    env.filters["thousands"] = _thousands
    env.filters["difference"] = difference
    env.filters["iso"] = _isolated
    return env


def overview_columns(layers: tuple[LayerResult, ...]) -> list[Column]:
    """The overview table's columns: every registered analysis's, sorted by their ``order``, kept
    where some layer measured the metric."""
    columns = [c for cls in ANALYSES.values() for c in cls.columns()]
    columns = sorted(columns, key=lambda c: c.order)  # stable: the registry's order within one order
    return [c for c in columns if any(c.metric in lr.metrics for lr in layers)]


def _cell(column: Column, value: Any) -> str:
    if column.format == "pct":
        return _pct(value)
    if column.format == "num1":
        return _num(value, 1)
    if column.format == "int":
        return "n/a" if value is None else str(value)
    return _num(value)


def _sections(
    env: Environment, view: View, findings: Mapping[str, Any], layer_ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each finding shown by its section: (name, title, HTML, bytes); a finding without a section,
    or whose section gives no context, is not shown."""
    out = []
    for name, finding in findings.items():
        cls = SECTIONS.get(name)
        if cls is None:
            continue
        view.code = cls.fingerprint()
        ctx = cls().context(finding, view)
        view.code = ""
        if ctx is None:
            continue
        anchor = f"{layer_ctx['anchor']}-{name}" if layer_ctx else name
        html = env.get_template(cls.template).render(s=ctx, l=layer_ctx, anchor=anchor)
        if f'id="{anchor}"' not in html:  # every section can be linked to (findings point at their evidence)
            html = f'<div id="{anchor}">{html}</div>'
        title = ANALYSES[name].title if name in ANALYSES else name
        out.append({"name": name, "title": title, "html": Markup(html), "bytes": len(html.encode("utf-8"))})
    return out


def _layer_context(
    env: Environment, lr: LayerResult, columns: list[Column], make_view: Callable[..., View]
) -> dict[str, Any]:
    leads = []
    for name, finding in lr.findings.items():
        cls = SECTIONS.get(name)
        sentence = cls().lead(finding) if cls is not None else None
        if sentence:
            leads.append(sentence)
    ctx = {
        "anchor": f"l-{lr.slug}",
        "model": lr.model,
        "layer": lr.layer,
        "reshape": lr.reshape,
        "dim": lr.dim,
        "n": lr.n,
        "notes": list(lr.notes),
        "metrics": dict(lr.metrics),
        "leads": leads,
        "cells": [_cell(c, lr.metrics.get(c.metric)) for c in columns],
        "maps": list(lr.maps),
    }
    view = make_view(f"{lr.slug}--", lr.layer, lr.model)
    ctx["sections"] = _sections(env, view, lr.findings, ctx)
    return ctx


def render_html(
    report: ReportData, budget: Budget, *, figures: Figures | None = None, extra_notes: tuple[str, ...] = ()
) -> Page:
    """One rendering at one size-budget step: HTML, figure files, bytes per section, cards."""
    spec = report.spec
    env = environment(spec.report.templates)
    files: dict[str, bytes] = {}
    figures = figures if figures is not None else Figures(None)
    colours = palette(len(report.samples.class_names))
    thumbs = Thumbs(report.samples.thumbnails, budget.thumb_quality)
    base_key = digest(
        __version__,
        code_fingerprint("reportgen.sections.view"),
        report.samples.labels,
        report.samples.class_names,
        spec.seed,
        spec.report.thumbnail_px,
        tuple(m.embeddings_key for m in report.models),
    )

    opts = spec.report
    cards = CardIndex(report.samples.ids)
    linked = linked_rows(report, int(opts.linked_points * budget.linked))

    def make_view(prefix: str, layer: str, model: str = "") -> View:
        return View(
            report, budget, colours, thumbs, figures, files, base_key, prefix, layer, cards=cards, linked=linked,
            model=model,
        )  # fmt: skip

    columns = overview_columns(report.layers)
    layers = [_layer_context(env, lr, columns, make_view) for lr in report.layers]
    layer_tpl = env.get_template("layer.html")
    sections = {l["anchor"]: layer_tpl.render(l=l) for l in layers}
    build_sections = _sections(env, make_view("", ""), report.build_findings, {})
    page_view = make_view("", "")
    findings = [
        {"h": h, "samples": [page_view.sample(r) for r in h.rows]} for h in report.headlines[:40]
    ]  # fmt: skip
    cards.add(linked)
    hex_colours = [hex_colour(c) for c in colours]
    card_list = card_contexts(report, cards, thumbs, lambda c: hex_colours[c], neighbours=budget.card_neighbours)
    image_cards = list(cards.images.values())
    data_island, scripts = "", tuple[str, ...]()
    if opts.interactive:
        points = point_rows(report, cards.rows, int(opts.interactive_points * budget.points))
        n = len(report.samples)
        note = (
            f"Every one of the {n:,} samples is interactive."
            if len(points) == n
            else f"{len(points):,} of the {n:,} samples are interactive: every sample with a card, the flagged "
            "samples (each flag's worst in turn, when they are more than the map holds) and a stratified sample of "
            "the rest; grey behind them: the density of all samples."
        )
        data = island(report, points, set(cards.rows), hex_colours, budget.atlas_quality, note)
        data_island, scripts = island_json(data), (script(),)
    names = report.samples.class_names
    counts = np.bincount(report.samples.labels, minlength=len(names))
    classes = [
        {
            "name": c,
            "colour": hex_colour(colours[i]),
            "used": int(counts[i]),
            "total": report.dataset.total_per_class.get(c, 0),
        }
        for i, c in enumerate(names)
    ]
    runs = [
        {
            "name": m.model.name,
            "arch": m.model.arch,
            "source": m.model.source,
            "sha": m.model.weights_sha256,
            "pre": m.model.preprocess.as_dict() if m.model.preprocess else None,
            "device": m.model.device,
            "precision": m.model.precision,
            "feeding": dict(m.model.feeding),
            "agreement": {k: dict(v) for k, v in m.model.agreement.items()},
            "cached": m.origin == "cache",
            "origin": m.origin,
            "key": m.embeddings_key,
        }
        for m in report.models
    ]
    stats = report.stats
    source = spec.source
    knn_k = min(spec.report.knn_k, len(report.samples) - 1)
    ctx = {
        "title": spec.title,
        "description": spec.description,
        "csp": csp(scripts),
        "script": Markup(scripts[0]) if scripts else "",
        "island": Markup(data_island),
        "cards": card_list,
        "image_cards": image_cards,
        "version": __version__,
        "dataset": report.dataset,
        "classes": classes,
        "n": len(report.samples),
        "bad": report.bad[:200],
        "n_bad": len(report.bad),
        "runs": runs,
        "layers": layers,
        "columns": columns,
        "sections": {k: Markup(v) for k, v in sections.items()},
        "build_sections": build_sections,
        "spec_text": source.shown,
        "overrides": list(source.overrides),
        "seed": spec.seed,
        "versions": dict(report.versions),
        "timings": sorted(stats.timings.items(), key=lambda kv: -kv[1]),
        "peak": max(stats.peak_rss_mb.values() or [0]),
        "notes": list(report.notes),
        "reductions": ([budget.label] if budget.label else []) + list(extra_notes),
        "distances": f"{spec.report.metric} distance in the full embedding space, k = {knn_k}.",
        "checks": list(report.checks),
        "metric_docs": metric_docs(),
        "findings": findings,
    }
    timing = env.get_template("timings.html").render(**ctx)
    samples_html = env.get_template("cards.html").render(**ctx)
    html = env.get_template("base.html").render(**ctx, timing=Markup(timing), samples=Markup(samples_html))
    section_bytes = {k: len(v.encode("utf-8")) for k, v in sections.items()}
    for s in build_sections:
        section_bytes[s["name"]] = s["bytes"]
    section_bytes["samples"] = len(samples_html.encode("utf-8"))
    section_bytes["interactive"] = len(data_island.encode("utf-8")) + sum(len(t.encode("utf-8")) for t in scripts)
    section_bytes["run timings"] = len(timing.encode("utf-8"))  # varies run to run: kept out of summary.json
    section_bytes["page"] = len(html.encode("utf-8")) - sum(section_bytes.values())
    card_ids = {report.samples.ids[r]: f"#{card_anchor(report.samples.ids[r])}" for r in sorted(cards.rows)}
    return Page(html, files, section_bytes, card_ids)


def render_report(report: ReportData, *, figure_cache: FigureCache | None = None) -> Rendered:
    """Render within ``output.max_html_mb``, stepping down the size ladder as needed."""
    limit = int(report.spec.output.max_html_mb * 1_000_000)
    figures = Figures(figure_cache)
    over = False
    for step, budget in enumerate(LADDER):
        page = render_html(report, budget, figures=figures)
        size = len(page.html.encode("utf-8"))
        if size <= limit:
            break
        log.info(
            "report is %.1f MB, over the %.1f MB budget; reducing (%s)",
            size / 1e6,
            limit / 1e6,
            LADDER[min(step + 1, len(LADDER) - 1)].label,
        )
    else:
        over = True
        log.warning(
            "report is %.1f MB even at the smallest settings, over output.max_html_mb = %g",
            size / 1e6,
            report.spec.output.max_html_mb,
        )
    reductions: tuple[str, ...] = (budget.label,) if budget.label else ()
    if over:  # said in the report itself, not only in the log
        reductions += (
            (
                f"the report is still {size / 1e6:.1f} MB, over the {report.spec.output.max_html_mb:g} MB budget after "
                "every reduction"
            ),
        )
        page = render_html(report, budget, figures=figures, extra_notes=reductions[-1:])
        size = len(page.html.encode("utf-8"))
    drawn, reused = tuple(sorted(figures.drawn)), tuple(sorted(figures.reused - figures.drawn))
    stats = HtmlStats(size, page.section_bytes, reductions, over, drawn, reused, page.cards)
    return Rendered(page.html, page.files, stats)
