"""The report's interactive layer: the samples the maps can be asked about, as a data island.

With JavaScript on, each map of the report (``data-map``) becomes a canvas one can hover (a
tooltip with the thumbnail, label, file name and flags), zoom, pan, colour by class, slice,
finding or a metadata column, search and click through to a sample's card. The data it needs sits
in one ``<script type="application/json">`` element: the points (a stratified sample of at most
``report.interactive_points`` that always holds every flagged sample and every sample with a
card), their coordinates in every map of every layer (uint16, base64), a coarse density of all
samples behind them, what the findings say of them and a JPEG atlas of their thumbnails. The
script (``templates/report.js``, hand-written, no library) runs under the page's
Content-Security-Policy by its SHA-256 hash: no ``unsafe-inline``, no ``eval``, no network.

With JavaScript off nothing here is needed: the PNG maps carry an HTML image map linking
``report.linked_points`` of their dots to the samples' cards.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import numpy as np

from .datasets.selection import stratified_rows
from .figures import data_uri, encode_jpeg
from .report import ReportData
from .resources import templates_dir
from .results import card_anchor
from .sections.cards import all_flags, flagged_rows, round_robin

#: The density behind the interactive points: a GRID x GRID histogram of every sample.
GRID = 80
#: Thumbnails in the atlas are at most this many pixels a side.
ATLAS_PX = 32


@cache
def script() -> str:
    """The report's script, as shipped (its hash goes into the Content-Security-Policy)."""
    return (templates_dir() / "report.js").read_text(encoding="utf-8")


def script_hash(text: str) -> str:
    """The CSP source that allows exactly ``text`` as an inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def island_json(data: Any) -> str:
    """JSON that can sit inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so no ``</script>``
    or ``<!--`` in a class or file name can end it), no line separators."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _fill(must: Iterable[int], labels: np.ndarray, n_classes: int, cap: int, seed: int) -> np.ndarray:
    """``must`` and, up to ``cap`` in all, a seeded stratified sample of the other rows."""
    chosen = np.unique(np.asarray(list(must), np.int64))
    room = cap - len(chosen)
    if room > 0:
        rest = np.setdiff1d(np.arange(len(labels)), chosen)
        if len(rest) <= room:
            chosen = np.arange(len(labels))
        else:
            pick = stratified_rows(labels[rest], n_classes, room, seed)
            chosen = np.union1d(chosen, rest[pick])
    return chosen


def linked_rows(report: ReportData, cap: int) -> np.ndarray:
    """The rows a map links to their cards with JavaScript off: flagged samples first (each flag's
    worst in turn), then a stratified sample of the rest, ``cap`` in all."""
    flagged = round_robin([f.rows for _, _, f in all_flags(report) if f.finding], cap)
    s = report.samples
    return _fill(flagged, s.labels, len(s.class_names), cap, report.spec.seed)


def point_rows(report: ReportData, cards: Iterable[int], cap: int) -> np.ndarray:
    """The interactive points: every sample with a card, the flagged samples (each flag's worst in
    turn when they are more than the room left), and a stratified sample of the rest up to ``cap``."""
    must = set(int(r) for r in cards)
    flagged, _ = flagged_rows(report, max(cap - len(must), 0))
    must.update(int(r) for r in flagged)
    s = report.samples
    return _fill(must, s.labels, len(s.class_names), cap, report.spec.seed)


def atlas(thumbnails: np.ndarray, rows: np.ndarray, quality: int) -> dict[str, Any] | None:
    """One JPEG of the points' thumbnails in a grid (``cols`` wide, ``tile`` pixels a side)."""
    if not len(rows):
        return None
    t = thumbnails.shape[1]
    step = max(1, -(-t // ATLAS_PX))
    tile = len(range(0, t, step))
    cols = int(np.ceil(np.sqrt(len(rows))))
    lines = -(-len(rows) // cols)
    sheet = np.full((lines * tile, cols * tile, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        y, x = divmod(i, cols)
        sheet[y * tile : (y + 1) * tile, x * tile : (x + 1) * tile] = thumbnails[r][::step, ::step][:tile, :tile]
    return {"uri": data_uri(encode_jpeg(sheet, quality), "image/jpeg"), "tile": tile, "cols": cols}


def _map_data(coords: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """One map: the points' positions as uint16 in the map's frame, and every sample's density."""
    c = np.asarray(coords, np.float64)
    ok = np.isfinite(c).all(axis=1)
    lo = c[ok].min(axis=0) if ok.any() else np.zeros(2)
    hi = c[ok].max(axis=0) if ok.any() else np.ones(2)
    pad = (hi - lo) * 0.03 + 1e-9
    lo, hi = lo - pad, hi + pad
    q = np.clip((np.nan_to_num(c[rows]) - lo) / (hi - lo), 0, 1)
    xy = np.round(q * 65535).astype("<u2")
    out: dict[str, Any] = {"xy": _b64(xy), "aspect": float((hi[1] - lo[1]) / (hi[0] - lo[0]))}
    if len(rows) < len(c):
        h, _, _ = np.histogram2d(c[ok, 0], c[ok, 1], bins=GRID, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
        dens = np.log1p(h.T)  # rows: y
        dens = np.round(255 * dens / max(dens.max(), 1e-9)).astype(np.uint8)
        out["density"] = _b64(dens)
        out["grid"] = GRID
    return out


def island(
    report: ReportData,
    points: np.ndarray,
    cards: set[int],
    colours: Sequence[str],
    quality: int,
    note: str,
) -> dict[str, Any]:
    """Everything the script needs, JSON-ready (see ``island_json``)."""
    s = report.samples
    pos = {int(r): i for i, r in enumerate(points)}

    def where(rows: np.ndarray) -> str:
        return _b64(np.asarray([pos[int(r)] for r in rows if int(r) in pos], "<u4"))

    layers = []
    for lr in report.layers:
        layers.append(
            {
                "anchor": f"l-{lr.slug}",
                "title": f"{lr.model} · {lr.layer}",
                "maps": {m: _map_data(r.coords, points) for m, r in lr.maps.items()},
                "values": [
                    {
                        "name": v.name,
                        "kind": v.kind,
                        "per_layer": v.per_layer,
                        "data": _b64(np.asarray(v.values[points], "<f4" if v.kind == "number" else "<u2")),
                    }
                    for v in lr.values
                ],
            }
        )
    flags = [
        {"name": f.name, "where": w, "layer": a, "href": f.anchor, "finding": f.finding, "points": where(f.rows)}
        for a, w, f in all_flags(report)
    ]
    metadata = []
    for name, values in s.metadata.items():
        vals = np.asarray([values[int(r)] for r in points], dtype=object)
        uniq, counts = np.unique(vals.astype(str), return_counts=True)
        keep = list(uniq[np.argsort(-counts, kind="stable")][:24])
        code = {v: i for i, v in enumerate(keep)}
        metadata.append(
            {
                "name": name,
                "values": keep,
                "codes": _b64(np.asarray([code.get(str(v), 65535) for v in vals], "<u2")),
            }
        )
    return {
        "version": 1,
        "n": len(s),
        "note": note,
        "classes": [{"name": n, "colour": colours[i]} for i, n in enumerate(s.class_names)],
        "ids": [s.ids[int(r)] for r in points],
        "labels": _b64(np.asarray(s.labels[points], "<u2")),
        "cards": [[i, card_anchor(s.ids[int(r)])] for i, r in enumerate(points) if int(r) in cards],
        "flags": flags,
        "metadata": metadata,
        "layers": layers,
        "atlas": atlas(s.thumbnails, points, quality) if report.dataset.has_images else None,
    }
