"""Render: ``BuildResult`` -> one self-contained ``report.html`` (+ ``summary.json``, ``figures/``).

One Jinja environment with autoescape and ``StrictUndefined``; every image is a data URI; a
Content-Security-Policy meta tag forbids every external load; no script at all.
If the HTML would exceed ``output.max_html_mb``, mosaics are capped and images recompressed
step by step until it fits, and the report says what was reduced.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import __version__
from .analyse import SHORTCUT_R, STAT_NAMES
from .figures import (
    CENTROID_LABELS,
    axis_histogram,
    data_uri,
    encode_jpeg,
    encode_png,
    frame_scatter,
    grid_mosaic,
    heatmap,
    hex_colour,
    image_mosaic,
    matrix_heatmap,
    overlay_scatter,
    palette,
    scatter_plot,
    scree_plot,
    thumbnail_uri,
)
from .store import slug, write_cached
from .summary import METRICS, components_for, summary_dict

log = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src 'none'; script-src 'none'; connect-src 'none'; form-action 'none'; base-uri 'none'"

MAP_TITLES = {"pca": "PCA (components 1 and 2)", "tsne": "t-SNE (openTSNE)", "umap": "UMAP", "pacmap": "PaCMAP"}


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
    Budget(0.25, 0.45, 65, 70, 0.75, "mosaics capped at a quarter of the samples, JPEG quality 65, galleries shortened by a quarter"),
    Budget(0.12, 0.25, 55, 60, 0.5, "mosaics capped at an eighth of the samples, JPEG quality 55, galleries halved"),
)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reportgen", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=1: "n/a" if v is None else f"{100 * float(v):.{d}f} %"
    env.filters["num"] = lambda v, d=3: "n/a" if v is None else f"{float(v):.{d}f}"
    return env


class _Thumbs:
    """Each thumbnail encoded once per build and reused by every gallery, strip and table."""

    def __init__(self, thumbnails: np.ndarray, quality: int) -> None:
        self.thumbnails, self.quality, self.cache = thumbnails, quality, {}

    def __call__(self, row: int) -> str:
        row = int(row)
        if row not in self.cache:
            self.cache[row] = thumbnail_uri(self.thumbnails[row], self.quality)
        return self.cache[row]


class _Memo(dict):
    """Figures are drawn once per build (not once per size-budget step), and kept on disk under
    the cache keyed by a fingerprint of everything that can change a figure, so a rebuild that
    changes only the title or gallery options draws nothing."""

    def __init__(self, folder: Path | None = None, fingerprint: str = "") -> None:
        super().__init__()
        self.folder, self.fingerprint = folder, fingerprint

    def _path(self, key) -> Path | None:
        if self.folder is None or not self.fingerprint:
            return None
        return self.folder / (hashlib.sha256((self.fingerprint + repr(key)).encode()).hexdigest()[:32] + ".bin")

    def get_or(self, key, make):
        if key in self:
            return self[key]
        path = self._path(key)
        if path is not None and path.exists():
            try:
                self[key] = path.read_bytes()
                return self[key]
            except OSError:
                pass
        self[key] = make()
        if path is not None:
            write_cached(path, self[key])
        return self[key]


def figure_fingerprint(res) -> str:
    """Everything a figure can depend on; report text options (title, gallery sizes) left out."""
    h = hashlib.sha256()
    report = res.spec.report.model_dump(mode="json", exclude={"gallery_size", "gallery_components", "neighbours", "hard_samples"})
    h.update(json.dumps([__version__, report, res.spec.seed, list(res.dataset.class_names), res.dataset.fingerprint], sort_keys=True).encode())
    h.update(np.ascontiguousarray(res.labels).tobytes())
    for run in res.runs:
        h.update(run.stored.key.encode())
        for lr in run.layers:
            h.update(lr.layer.encode())
            for name, p in lr.projections.items():
                h.update(name.encode())
                h.update(np.ascontiguousarray(p.coords).tobytes())
    for d in res.shifts or []:
        for name, c in d.coords.items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(c).tobytes())
    if res.comparison is not None:
        h.update(np.ascontiguousarray(res.comparison.cka).tobytes())
    return h.hexdigest()


def _fig(name: str, data: bytes, mime: str, alt: str, caption: str, files: dict[str, bytes], png: bytes | None = None) -> dict:
    files[name] = png if png is not None else data
    return {"name": name, "uri": data_uri(data, mime), "alt": alt, "caption": caption}


def _mosaic_fig(name: str, mosaic, quality: int, memo: "_Memo", alt: str, caption: str, files: dict[str, bytes]) -> dict:
    """Mosaic in the HTML as JPEG or PNG, whichever is smaller (upscaled pixel art favours PNG)."""
    png = memo.get_or(("png", name, len(mosaic.rows)), lambda: encode_png(mosaic.pixels))
    jpg = encode_jpeg(mosaic.pixels, quality)
    data, mime = (png, "image/png") if len(png) <= len(jpg) else (jpg, "image/jpeg")
    return _fig(name, data, mime, alt, caption, files, png=png)


def _layer_context(res, lr, budget: Budget, thumbs: _Thumbs, colours: np.ndarray, files: dict[str, bytes], memo: _Memo) -> dict:
    spec = res.spec
    names = res.dataset.class_names
    labels = res.labels
    ids = res.ids
    base = lr.slug
    n = len(labels)

    def sample(row, **extra):
        row = int(row)
        c = int(labels[row])
        return {"row": row, "id": ids[row], "label": names[c], "colour": hex_colour(colours[c]), "thumb": thumbs(row), **extra}

    pca = lr.pca
    cum = np.cumsum(pca.explained_variance_ratio)
    variance = [
        {"pc": i + 1, "ratio": float(r), "cum": float(cum[i]), "eta2": float(lr.eta2[i]) if i < len(lr.eta2) else 0.0}
        for i, r in enumerate(pca.explained_variance_ratio)
    ]
    figs: dict[str, Any] = {}
    figs["scree"] = _fig(f"{base}--scree.png", memo.get_or((base, "scree"), lambda: scree_plot(pca.explained_variance_ratio)), "image/png", f"Scree plot of {lr.layer}",
                         "Bars: share of the total variance each principal component explains; line: cumulative share. A steep drop means a few directions dominate the layer.", files)
    comp_names = [f"PC{i + 1}" for i in range(pca.k)]
    if pca.k:
        figs["class_means"] = _fig(f"{base}--class-means.png", memo.get_or((base, "cm"), lambda: heatmap(lr.class_means, names, comp_names, label="class mean (std units)")), "image/png",
                                   f"Class means per component for {lr.layer}",
                                   "Each cell: how far a class's mean score on a component lies from the overall mean, in standard deviations (red high, blue low). A column with one strong cell is a component that singles out that class.", files)
        figs["stats"] = _fig(f"{base}--image-stats.png", memo.get_or((base, "st"), lambda: heatmap(lr.stat_corr, STAT_NAMES, comp_names, vlim=1.0, label="Pearson r", fmt=".2f")), "image/png",
                             f"Correlation of components with image statistics for {lr.layer}",
                             f"Pearson correlation of each component's scores with simple image statistics computed from the thumbnails. |r| >= {SHORTCUT_R} flags a component that may track a shortcut (lighting, colour) rather than content.", files)
    shortcuts = [
        {"pc": j + 1, "stat": STAT_NAMES[i], "r": float(lr.stat_corr[i, j])}
        for j in range(lr.stat_corr.shape[1]) for i in range(lr.stat_corr.shape[0]) if abs(lr.stat_corr[i, j]) >= SHORTCUT_R
    ]
    gsize = max(1, int(round(spec.report.gallery_size * budget.gallery_fraction)))
    galleries = []
    for e in lr.ends:
        sc = pca.scores[:, e.component]
        galleries.append({
            "pc": e.component + 1, "ratio": float(pca.explained_variance_ratio[e.component]), "eta2": float(lr.eta2[e.component]),
            "low": [sample(r, score=float(sc[r])) for r in e.low[:gsize]],
            "high": [sample(r, score=float(sc[r])) for r in e.high[:gsize]],
            "low_makeup": _makeup(e.low[:gsize], labels, names), "high_makeup": _makeup(e.high[:gsize], labels, names),
        })
    maps = []
    for method, proj in lr.projections.items():
        title = MAP_TITLES.get(method, method)
        m = {"method": method, "title": title, "params": proj.params, "notes": list(proj.notes), "trust": lr.trust.get(method)}
        m["scatter"] = _fig(f"{base}--{method}-scatter.png", memo.get_or((base, method, "sc"), lambda: scatter_plot(proj.coords, labels, names, colours, seed=spec.seed)), "image/png",
                            f"{title} class scatter of {lr.layer}",
                            ("Every sample is a dot coloured by its class (legend: class and count). " if len(names) <= 20 else
                             f"Every sample is a dot coloured by its class; with {len(names)} classes, names sit at class centroids"
                             + (f" (the {CENTROID_LABELS} largest classes)" if len(names) > CENTROID_LABELS else "") + ". ")
                            + f"Nearby dots have similar embeddings{' in this map' if method != 'pca' else ''}; "
                            + ("distances between far-apart clusters in t-SNE/UMAP maps are not meaningful." if method != "pca" else "axes are the first two principal components."), files)
        cap = max(1, int(spec.report.mosaic_cap * budget.mosaic_cap))
        mo = image_mosaic(proj.coords, res.thumbnails, labels, colours, cap=cap, seed=spec.seed)
        shown = len(mo.rows)
        m["mosaic"] = _mosaic_fig(f"{base}--{method}-mosaic.png", mo, budget.mosaic_quality, memo, f"{title} image mosaic of {lr.layer}",
                           f"Thumbnails at their map positions, each bordered in its class colour. {shown:,} of {n:,} samples shown"
                           + (f" (a random subset, seed {spec.seed})" if shown < n else "") + "; drawn in random order, so overlaps favour no class.", files)
        gcap = max(4, int(spec.report.grid_cap * budget.grid_cap))
        gm = grid_mosaic(proj.coords, res.thumbnails, labels, colours, cap=gcap, seed=spec.seed)
        m["grid"] = _mosaic_fig(f"{base}--{method}-grid.png", gm, budget.mosaic_quality, memo, f"{title} grid mosaic of {lr.layer}",
                         f"The same map snapped to a {int(np.sqrt(len(gm.rows)))}x{int(np.sqrt(len(gm.rows)))} grid by linear assignment: each of {len(gm.rows):,} samples"
                         + (" (a random subset)" if len(gm.rows) < n else "") + " appears exactly once and nothing overlaps; layout follows the map.", files)
        maps.append(m)
    g = lr.graph
    neighbours = [
        {"query": sample(q), "items": [sample(g.indices[q, j], distance=float(g.distances[q, j]), same=bool(labels[g.indices[q, j]] == labels[q])) for j in range(min(spec.report.neighbours, g.indices.shape[1]))]}
        for q in lr.queries
    ]
    hard = [sample(h.row, majority=names[h.majority], agreement=h.agreement) for h in lr.hard]
    kd = g.distances[:, lr.knn_k - 1]
    outl = [sample(r, distance=float(kd[r])) for r in lr.outliers]
    axes = []
    for a in lr.axes:
        ia, ib = names.index(a.class_a), names.index(a.class_b)
        axes.append({
            "a": a.class_a, "b": a.class_b, "separation": a.separation,
            "strip": [sample(r, t=float(a.t[r])) for r in a.strip],
            "hist": _fig(f"{base}--axis-{slug(a.class_a)}-{slug(a.class_b)}.png", memo.get_or((base, "ax", a.class_a, a.class_b), lambda: axis_histogram(a.t, labels, ia, ib, names, colours)), "image/png",
                         f"Projection onto the axis from {a.class_a} to {a.class_b}",
                         f"Every sample of the two classes projected onto the line through their centroids (0 = {a.class_a}, 1 = {a.class_b}). Overlap between the histograms shows how often the layer confuses them.", files),
        })
    return {
        "anchor": f"l-{base}", "model": lr.model, "layer": lr.layer, "reshape": lr.reshape, "dim": lr.dim, "n": n,
        "variance": variance, "total_variance": pca.total_variance, "c90": components_for(lr.pca, 0.9), "pr": pca.participation_ratio,
        "figs": figs, "shortcuts": shortcuts, "galleries": galleries, "maps": maps, "neighbours": neighbours, "metric": g.metric,
        "hard": hard, "outliers": outl, "axes": axes, "knn": lr.knn_accuracy, "knn_k": lr.knn_k, "notes": lr.notes,
        "probe": lr.probe[0], "silhouette": lr.silhouette[0],
    }


def _makeup(rows, labels, names) -> str:
    """'7 of 8: Sneaker (+1 Sandal)' - the class make-up of one end of a component."""
    counts = np.bincount(labels[rows], minlength=len(names))
    top = [i for i in np.argsort(-counts, kind="stable") if counts[i]]
    if not top:
        return ""
    rest = ", ".join(f"{counts[i]}× {names[i]}" for i in top[1:4]) + (" ..." if len(top) > 4 else "")
    return f"{counts[top[0]]} of {len(rows)}: {names[top[0]]}" + (f" (+ {rest})" if rest else "")


def _comparison_context(res, colours, files, memo) -> dict:
    comp = res.comparison
    names = res.dataset.class_names
    ctx = {"reference": comp.reference, "notes": comp.notes, "frames": [], "changes": []}
    ctx["cka"] = _fig("compare--cka.png", memo.get_or(("cka",), lambda: matrix_heatmap(comp.cka, comp.names)), "image/png", "Linear CKA between layers",
                      "Linear CKA (0 to 1) between every pair of layers across the models, on the same samples: 1 means the two layers hold the same information up to rotation and scale. Read the diagonal blocks for one model's layers, the off-diagonal blocks for how two models' layers correspond.", files)
    for f in comp.frames:
        ctx["frames"].append({"layer": f.layer, "method": f.method, "fig": _fig(
            f"compare--{slug(f.layer)}-{f.method}.png",
            memo.get_or(("frame", f.layer, f.method), lambda f=f: frame_scatter(f.coords, res.labels, names, colours, seed=res.spec.seed)), "image/png",
            f"{MAP_TITLES.get(f.method, f.method)} of {f.layer} in one frame",
            f"{MAP_TITLES.get(f.method, f.method)} fitted on {comp.reference} and applied to the other models: the panels share axes, so a class that moves between panels moved in the embedding space.", files)})
    for ch in comp.changes:
        rows = []
        for c, n in enumerate(names):
            a, b = ch.knn_reference[c], ch.knn_other[c]
            rows.append({"name": n, "colour": hex_colour(colours[c]), "ref": None if np.isnan(a) else float(a), "other": None if np.isnan(b) else float(b),
                         "delta": None if np.isnan(a) or np.isnan(b) else float(b - a),
                         "shift": None if ch.centroid_shift is None or not np.isfinite(ch.centroid_shift[c]) else float(ch.centroid_shift[c])})
        rows.sort(key=lambda r: (r["delta"] is None, r["delta"] if r["delta"] is not None else 0))
        ctx["changes"].append({"model": ch.model, "layer": ch.layer, "rows": rows[:60], "more": max(0, len(rows) - 60)})
    return ctx


def _shift_context(res, files, memo) -> dict:
    rows, figs = [], []
    for d in res.shifts:
        rows.append({"dataset": d.dataset, "model": d.model, "layer": d.layer, "n": d.n, "mmd2": d.mmd2, "p": d.p_value, "perm": d.permutations, "auc": d.auc})
    keys = sorted({(d.model, d.layer, m) for d in res.shifts for m in d.coords}, key=lambda k: (k[0], k[1], list(MAP_TITLES).index(k[2]) if k[2] in MAP_TITLES else 9))
    runs = {r.model.name: r for r in res.runs}
    for model, layer, method in keys:
        lr = next(l for l in runs[model].layers if l.layer == layer)
        others = {d.dataset: d.coords[method] for d in res.shifts if d.model == model and d.layer == layer and method in d.coords}
        title = MAP_TITLES.get(method, method)
        figs.append(_fig(f"datasets--{slug(model)}--{slug(layer)}-{method}.png",
                         memo.get_or(("shift", model, layer, method), lambda lr=lr, others=others: overlay_scatter(lr.projections[method].coords, others, reference_name=res.dataset.name, seed=res.spec.seed)),
                         "image/png", f"{title} of {layer}: datasets overlaid",
                         f"{model} · {layer}: {title} fitted on {res.dataset.name} (grey) with the other datasets placed in the same frame. Regions covered by one dataset only show where they differ.", files))
    return {"rows": rows, "figs": figs, "reference": res.dataset.name}


def render_html(res, budget: Budget, colours: np.ndarray, memo: _Memo | None = None) -> tuple[str, dict[str, bytes], dict[str, int]]:
    env = environment()
    files: dict[str, bytes] = {}
    thumbs = _Thumbs(res.thumbnails, budget.thumb_quality)
    memo = _Memo() if memo is None else memo
    layers = [_layer_context(res, lr, budget, thumbs, colours, files, memo) for run in res.runs for lr in run.layers]
    layer_tpl = env.get_template("layer.html")
    sections = {l["anchor"]: layer_tpl.render(l=l) for l in layers}
    names = res.dataset.class_names
    counts = np.bincount(res.labels, minlength=len(names))
    classes = [{"name": c, "colour": hex_colour(colours[i]), "used": int(counts[i]), "total": res.selection.total_per_class.get(c, 0)} for i, c in enumerate(names)]
    runs = [{"name": r.model.name, "arch": r.model.arch, "source": r.model.source, "sha": r.model.weights_sha256, "pre": r.model.preprocess.as_dict(),
             "device": r.model.device, "cached": r.from_cache, "key": r.stored.key} for r in res.runs]
    from .pipeline import library_versions

    ctx = {
        "title": res.spec.title, "description": res.spec.description, "csp": CSP, "version": __version__, "dataset": res.dataset, "selection": res.selection,
        "classes": classes, "n": len(res.labels), "bad": res.bad[:200], "n_bad": len(res.bad), "runs": runs, "layers": layers,
        "sections": {k: Markup(v) for k, v in sections.items()}, "spec_text": res.spec_text, "seed": res.spec.seed,
        "versions": library_versions(), "timings": sorted(res.timings.items(), key=lambda kv: -kv[1]), "peak": max(res.peak_rss_mb.values() or [0]),
        "notes": res.notes, "reductions": [budget.label] if budget.label else [], "map_titles": MAP_TITLES,
        "metric_name": res.spec.report.metric, "checks": res.checks, "metric_docs": METRICS,
    }
    ctx["comparison"] = _comparison_context(res, colours, files, memo) if res.comparison is not None else None
    ctx["shifts"] = _shift_context(res, files, memo) if res.shifts else None
    timing = env.get_template("timings.html").render(**ctx)
    html = env.get_template("base.html").render(**ctx, timing=Markup(timing))
    section_bytes = {k: len(v.encode("utf-8")) for k, v in sections.items()}
    section_bytes["run timings"] = len(timing.encode("utf-8"))  # varies run to run: kept out of summary.json
    section_bytes["page"] = len(html.encode("utf-8")) - sum(section_bytes.values())
    return html, files, section_bytes


def write_report(res, out_dir: Path) -> None:
    from .pipeline import atomic_dir

    limit = int(res.spec.output.max_html_mb * 1_000_000)
    colours = palette(len(res.dataset.class_names))
    from .store import default_cache_dir

    memo = _Memo((res.cache_dir or default_cache_dir()) / "figures", figure_fingerprint(res)) if res.use_cache else _Memo()
    for step, budget in enumerate(LADDER):
        html, files, section_bytes = render_html(res, budget, colours, memo)
        size = len(html.encode("utf-8"))
        if size <= limit:
            break
        log.info("report is %.1f MB, over the %.1f MB budget; reducing (%s)", size / 1e6, limit / 1e6, LADDER[min(step + 1, len(LADDER) - 1)].label)
    else:
        log.warning("report is %.1f MB even at the smallest settings, over output.max_html_mb = %g", size / 1e6, res.spec.output.max_html_mb)
        res.notes.append(f"The report is {size / 1e6:.1f} MB, over the {res.spec.output.max_html_mb:g} MB budget even after every reduction.")
    res.html_bytes, res.section_bytes = size, section_bytes
    res.reductions = [budget.label] if budget.label else []
    stable = {k: v for k, v in section_bytes.items() if k != "run timings"}
    summary = summary_dict(res, html_bytes=sum(stable.values()), section_bytes=stable, reductions=res.reductions)
    summary["checks"] = [c.as_dict() for c in res.checks]
    summary["check_specs"] = [c.model_dump(mode="json") for c in res.spec.checks]
    run_info = {"html_bytes": size, "section_bytes": section_bytes, "timings_s": res.timings, "peak_rss_mb": res.peak_rss_mb, "forward_calls": res.forward_calls, "reducer_fits": res.reducer_fits,
                "from_cache": {r.model.name: r.from_cache for r in res.runs}}
    with atomic_dir(out_dir) as tmp:
        (tmp / "report.html").write_text(html, encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
        (tmp / "run.json").write_text(json.dumps(run_info, indent=1) + "\n", encoding="utf-8")
        if res.spec.checks:
            from .checks import junit_xml

            (tmp / "checks.xml").write_text(junit_xml(res.checks), encoding="utf-8")
        if res.spec.output.figures:
            (tmp / "figures").mkdir()
            for name, data in files.items():
                (tmp / "figures" / name).write_bytes(data)
