"""Render: ``ReportData`` -> one self-contained HTML text and figure bytes. No file I/O.

One Jinja environment with autoescape and ``StrictUndefined``; every image is a data URI; a
Content-Security-Policy meta tag forbids every external load; no script at all. Each analysis
renders its own section template (``templates/sections/<name>.html``) from the context its
``context()`` returns. If the HTML would exceed ``output.max_html_mb``, mosaics are capped and
images recompressed step by step until it fits, and the report says what was reduced.
Figures are drawn once per build (not once per size step), and through ``figure_cache`` (the
pipeline's disk cache) not at all when nothing they show, nor the code that draws them, changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ._version import __version__
from .analyses import ANALYSES, Analysis, metric_docs
from .figures import data_uri, encode_jpeg, encode_png, hex_colour, palette, thumbnail_uri
from .fingerprint import code_fingerprint
from .resources import templates_dir
from .results import HtmlStats, LayerResult, ModelResult, ReportData

log = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; script-src 'none'; connect-src 'none'; form-action 'none'; base-uri 'none'"


@dataclass(frozen=True)
class Budget:
    """One step of the size ladder: what to reduce when the report is too large."""

    mosaic_cap: float  # fraction of spec.report.mosaic_cap
    grid_cap: float
    mosaic_quality: int
    thumb_quality: int
    gallery_fraction: float
    label: str


LADDER = (
    Budget(1.0, 1.0, 85, 85, 1.0, ""),
    Budget(0.5, 0.7, 75, 80, 1.0, "mosaics capped at half the samples, JPEG quality 75"),
    Budget(
        0.25,
        0.45,
        65,
        70,
        0.75,
        "mosaics capped at a quarter of the samples, JPEG quality 65, galleries shortened by a quarter",
    ),
    Budget(0.12, 0.25, 55, 60, 0.5, "mosaics capped at an eighth of the samples, JPEG quality 55, galleries halved"),
)


class FigureCache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class Rendered:
    html: str
    figures: Mapping[str, bytes]  # file name -> PNG bytes (written to figures/)
    stats: HtmlStats


def environment(overrides: Path | None = None) -> Environment:
    """Templates from ``overrides`` (a team's folder: branding, an extra section) first, then the
    built-in ones; autoescape and StrictUndefined either way."""
    loaders = [FileSystemLoader(str(overrides))] if overrides is not None else []
    env = Environment(
        loader=ChoiceLoader([*loaders, FileSystemLoader(str(templates_dir()))]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=1: "n/a" if v is None else f"{100 * float(v):.{d}f} %"
    env.filters["num"] = lambda v, d=3: "n/a" if v is None else f"{float(v):.{d}f}"
    return env


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


class _Figures:
    """Figure bytes of one build: drawn once (not once per size step), read from ``cache`` when an
    earlier build drew the same data with the same code."""

    def __init__(self, cache: FigureCache | None) -> None:
        self.cache, self.memo = cache, {}

    def get_or(self, key: str, make: Callable[[], bytes]) -> bytes:
        if key in self.memo:
            return self.memo[key]
        data = self.cache.get(key) if self.cache is not None else None
        if data is None:
            data = make()
            if self.cache is not None:
                self.cache.put(key, data)
        self.memo[key] = data
        return data


class _Thumbs:
    """Each thumbnail encoded once per size step and reused by every gallery, strip and table."""

    def __init__(self, thumbnails: np.ndarray, quality: int) -> None:
        self.thumbnails, self.quality, self.cache = thumbnails, quality, {}

    def __call__(self, row: int) -> str:
        row = int(row)
        if row not in self.cache:
            self.cache[row] = thumbnail_uri(self.thumbnails[row], self.quality)
        return self.cache[row]


class View:
    """What a section's ``context()`` uses to show samples and figures; one per layer (or one for
    the build), pointed at the analysis being rendered."""

    def __init__(
        self,
        report: ReportData,
        budget: Budget,
        colours: np.ndarray,
        thumbs: _Thumbs,
        figs: _Figures,
        files: dict[str, bytes],
        base_key: str,
        prefix: str = "",
        layer: str = "",
    ) -> None:
        self.report, self.budget, self.colours, self._thumbs, self._figs, self._files = (
            report,
            budget,
            colours,
            thumbs,
            figs,
            files,
        )
        self._base_key, self.prefix, self.layer = base_key, prefix, layer
        opts = report.spec.report
        self.options, self.seed = opts, report.spec.seed
        self.labels, self.class_names, self.ids = report.samples.labels, report.samples.class_names, report.samples.ids
        self.thumbnails = report.samples.thumbnails
        self.gallery_size = max(1, int(round(opts.gallery_size * budget.gallery_fraction)))
        self.mosaic_cap = max(1, int(opts.mosaic_cap * budget.mosaic_cap))
        self.grid_cap = max(4, int(opts.grid_cap * budget.grid_cap))
        self.dataset_name = report.dataset.name
        self.models_by_name = {m.model.name: m for m in report.models}
        self.analysis: type[Analysis] | None = None

    def colour(self, c: int) -> str:
        return hex_colour(self.colours[int(c)])

    def sample(self, row, **extra) -> dict:
        row = int(row)
        c = int(self.labels[row])
        return {
            "row": row,
            "id": self.ids[row],
            "label": self.class_names[c],
            "colour": self.colour(c),
            "thumb": self._thumbs(row),
            **extra,
        }

    def image(self, thumbnail: np.ndarray, label: str, id: str, **extra) -> dict:
        """A sample-like dict for an image that is not a row of the report's samples (a compared
        dataset's), bordered in its class colour when the class is known."""
        c = self.class_names.index(label) if label in self.class_names else None
        return {
            "row": -1,
            "id": id,
            "label": label,
            "colour": self.colour(c) if c is not None else "#9aa3ad",
            "thumb": thumbnail_uri(np.asarray(thumbnail), self.budget.thumb_quality),
            **extra,
        }

    def _key(self, name: str, data: tuple, *extra) -> str:
        code = self.analysis.fingerprint() if self.analysis is not None else ""
        return _digest(self._base_key, self.prefix, name, code, *extra, *data)

    def _fig(
        self, name: str, data: bytes, mime: str, alt: str, caption: str, png: bytes | None = None, cls: str = ""
    ) -> dict:
        fname = f"{self.prefix}{name}.png"
        self._files[fname] = png if png is not None else data
        return {"name": fname, "uri": data_uri(data, mime), "alt": alt, "caption": caption, "cls": cls}

    def figure(
        self, name: str, make: Callable[[], bytes], *, data: tuple = (), alt: str, caption: str, cls: str = ""
    ) -> dict:
        """A PNG plot, drawn by ``make`` unless the same ``data`` was drawn by the same code before."""
        png = self._figs.get_or(self._key(name, data), make)
        return self._fig(name, png, "image/png", alt, caption, cls=cls)

    def mosaic(self, name: str, mosaic, *, data: tuple = (), alt: str, caption: str) -> dict:
        """A mosaic in the HTML as JPEG or PNG, whichever is smaller (upscaled pixel art favours PNG)."""
        png = self._figs.get_or(
            self._key(name, data, "png", len(mosaic.rows), mosaic.pixels.shape), lambda: encode_png(mosaic.pixels)
        )
        jpg = encode_jpeg(mosaic.pixels, self.budget.mosaic_quality)
        data_, mime = (png, "image/png") if len(png) <= len(jpg) else (jpg, "image/jpeg")
        return self._fig(name, data_, mime, alt, caption, png=png)


def _layer_summary(lr: LayerResult) -> dict:
    met = lr.metrics
    return {
        "variance_top10": met.get("variance_top10"),
        "c90": met.get("components_for_90"),
        "knn": met.get("knn_accuracy"),
        "probe": met.get("linear_probe_accuracy"),
        "silhouette": met.get("silhouette"),
        "trust": {m: met.get(f"trustworthiness_{m}") for m in lr.maps},
    }


def _sections(env: Environment, view: View, findings: Mapping[str, Any], layer_ctx: dict) -> list[dict]:
    out = []
    for name, finding in findings.items():
        cls = ANALYSES.get(name)
        if cls is None:
            continue
        analysis = cls(view.options, view.seed)
        view.analysis = cls
        ctx = analysis.context(finding, view)
        view.analysis = None
        if ctx is None:
            continue
        anchor = f"{layer_ctx['anchor']}-{name}" if layer_ctx else name
        html = env.get_template(cls.template).render(s=ctx, l=layer_ctx, anchor=anchor)
        if f'id="{anchor}"' not in html:  # every section can be linked to (findings point at their evidence)
            html = f'<div id="{anchor}">{html}</div>'
        out.append({"name": name, "title": cls.title, "html": Markup(html), "bytes": len(html.encode("utf-8"))})
    return out


def _layer_context(
    env: Environment, report: ReportData, mr: ModelResult, lr: LayerResult, make_view: Callable[[str, str], View]
) -> dict:
    ctx = {
        "anchor": f"l-{lr.slug}",
        "model": lr.model,
        "layer": lr.layer,
        "reshape": lr.reshape,
        "dim": lr.dim,
        "n": lr.n,
        "notes": list(lr.notes),
        "metrics": dict(lr.metrics),
        "summary": _layer_summary(lr),
        "maps": list(lr.maps),
    }
    view = make_view(f"{lr.slug}--", lr.layer)
    ctx["sections"] = _sections(env, view, lr.findings, ctx)
    return ctx


def render_html(
    report: ReportData, budget: Budget, *, figures: _Figures | None = None, extra_notes: tuple[str, ...] = ()
) -> tuple[str, dict[str, bytes], dict[str, int]]:
    """One rendering at one size-budget step: (HTML, figure files, bytes per section)."""
    spec = report.spec
    env = environment(spec.report.templates)
    files: dict[str, bytes] = {}
    figures = figures if figures is not None else _Figures(None)
    colours = palette(len(report.samples.class_names))
    thumbs = _Thumbs(report.samples.thumbnails, budget.thumb_quality)
    base_key = _digest(
        __version__,
        code_fingerprint("reportgen.figures", "reportgen.render"),
        report.samples.labels,
        report.samples.class_names,
        spec.seed,
        spec.report.thumbnail_px,
        tuple(m.embeddings_key for m in report.models),
    )

    def make_view(prefix: str, layer: str) -> View:
        return View(report, budget, colours, thumbs, figures, files, base_key, prefix, layer)

    layers = [_layer_context(env, report, mr, lr, make_view) for mr in report.models for lr in mr.layers]
    layer_tpl = env.get_template("layer.html")
    sections = {l["anchor"]: layer_tpl.render(l=l) for l in layers}
    build_sections = _sections(env, make_view("", ""), report.build_findings, {})
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
    ctx = {
        "title": spec.title,
        "description": spec.description,
        "csp": CSP,
        "version": __version__,
        "dataset": report.dataset,
        "classes": classes,
        "n": len(report.samples),
        "bad": report.bad[:200],
        "n_bad": len(report.bad),
        "runs": runs,
        "layers": layers,
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
        "metric_name": spec.report.metric,
        "checks": list(report.checks),
        "metric_docs": metric_docs(),
        "findings": list(report.headlines[:40]),
    }
    timing = env.get_template("timings.html").render(**ctx)
    html = env.get_template("base.html").render(**ctx, timing=Markup(timing))
    section_bytes = {k: len(v.encode("utf-8")) for k, v in sections.items()}
    for s in build_sections:
        section_bytes[s["name"]] = s["bytes"]
    section_bytes["run timings"] = len(timing.encode("utf-8"))  # varies run to run: kept out of summary.json
    section_bytes["page"] = len(html.encode("utf-8")) - sum(section_bytes.values())
    return html, files, section_bytes


def render_report(report: ReportData, *, figure_cache: FigureCache | None = None) -> Rendered:
    """Render within ``output.max_html_mb``, stepping down the size ladder as needed."""
    limit = int(report.spec.output.max_html_mb * 1_000_000)
    figures = _Figures(figure_cache)
    over = False
    for step, budget in enumerate(LADDER):
        html, files, section_bytes = render_html(report, budget, figures=figures)
        size = len(html.encode("utf-8"))
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
    reductions = (budget.label,) if budget.label else ()
    if over:  # said in the report itself, not only in the log
        reductions += (
            f"the report is still {size / 1e6:.1f} MB, over the {report.spec.output.max_html_mb:g} MB budget after every reduction",
        )
        html, files, section_bytes = render_html(report, budget, figures=figures, extra_notes=reductions[-1:])
        size = len(html.encode("utf-8"))
    return Rendered(html, files, HtmlStats(size, section_bytes, reductions, over))
