"""What a section sees of the report while it presents a finding (``View``): samples as
thumbnails with their label and colour, figures drawn once and cached, the size budget's caps.

One ``View`` per layer (or one for the build), given the code of the section being rendered. Figures are
drawn once per build (not once per size step) and, through the figure cache, not at all when an
earlier build drew the same data with the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..figures import (
    Mosaic,
    data_uri,
    encode_jpeg,
    encode_png,
    figure_png,
    figure_png_points,
    hex_colour,
    thumbnail_uri,
)
from ..report import ReportData
from .cards import CardIndex, ImageCard, flagged_rows, image_anchor

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Budget:
    """One step of the size ladder: what to reduce when the report is too large. The interactive
    layer's detail (its points, its thumbnails' quality, the points a map links to their cards)
    goes first; the evidence (mosaics, galleries, thumbnails) after it."""

    mosaic_cap: float  # fraction of spec.report.mosaic_cap
    grid_cap: float
    mosaic_quality: int
    thumb_quality: int
    gallery_fraction: float
    label: str
    points: float = 1.0  # fraction of spec.report.interactive_points
    linked: float = 1.0  # fraction of spec.report.linked_points
    atlas_quality: int = 80  # JPEG quality of the interactive maps' thumbnails
    card_neighbours: int = 5  # nearest samples a card lists per layer


class FigureCache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


def digest(*parts: object) -> str:
    """A digest of values and arrays (dtype, shape and bytes): a figure's key."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.data.cast("B"))
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Figures:
    """Figure bytes of one build: drawn once (not once per size step), read from ``cache`` when an
    earlier build drew the same data with the same code. ``drawn`` and ``reused`` name the figure
    files of this build that were drawn and read back (run.json)."""

    cache: FigureCache | None
    memo: dict[str, bytes] = field(default_factory=dict)
    drawn: set[str] = field(default_factory=set)
    reused: set[str] = field(default_factory=set)

    def get_or(self, key: str, name: str, make: Callable[[], bytes]) -> bytes:
        if key in self.memo:
            return self.memo[key]
        data = self.cache.get(key) if self.cache is not None else None
        if data is None:
            data = make()
            self.drawn.add(name)
            if self.cache is not None:
                self.cache.put(key, data)
        else:
            self.reused.add(name)
        self.memo[key] = data
        return data


def _png_size(png: bytes) -> tuple[int, int]:
    """A PNG's width and height in pixels, from its header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _pack(png: bytes, xy: np.ndarray) -> bytes:
    """A figure and where its linked points landed, as one cached value."""
    return len(png).to_bytes(8, "little") + png + np.ascontiguousarray(xy, "<f4").tobytes()


def _unpack(blob: bytes) -> tuple[bytes, np.ndarray]:
    n = int.from_bytes(blob[:8], "little")
    return blob[8 : 8 + n], np.frombuffer(blob[8 + n :], "<f4").reshape(-1, 2)


class Thumbs:
    """Each thumbnail encoded once per size step and reused by every gallery, strip and table."""

    def __init__(self, thumbnails: np.ndarray, quality: int) -> None:
        self.thumbnails, self.quality = thumbnails, quality
        self.cache: dict[int, str] = {}

    def __call__(self, row: int) -> str:
        row = int(row)
        if row not in self.cache:
            self.cache[row] = thumbnail_uri(self.thumbnails[row], self.quality)
        return self.cache[row]


class View:
    """What a section's ``context()`` uses to show samples and figures; one per layer (or one for
    the build), given the code of the section being rendered (``code``)."""

    def __init__(
        self,
        report: ReportData,
        budget: Budget,
        colours: np.ndarray,
        thumbs: Thumbs,
        figs: Figures,
        files: dict[str, bytes],
        base_key: str,
        prefix: str = "",
        layer: str = "",
        *,
        cards: CardIndex | None = None,
        linked: np.ndarray | None = None,
        model: str = "",
    ) -> None:
        self.report, self.budget, self.colours, self._thumbs, self._figs, self._files = (
            report,
            budget,
            colours,
            thumbs,
            figs,
            files,
        )
        self._base_key, self.prefix, self.layer, self.model = base_key, prefix, layer, model
        opts = report.spec.report
        self.options, self.seed = opts, report.spec.seed
        self.labels, self.class_names, self.ids = report.samples.labels, report.samples.class_names, report.samples.ids
        self.thumbnails = report.samples.thumbnails
        self.gallery_size = max(1, int(round(opts.gallery_size * budget.gallery_fraction)))
        self.mosaic_cap = max(1, int(opts.mosaic_cap * budget.mosaic_cap))
        self.grid_cap = max(4, int(opts.grid_cap * budget.grid_cap))
        self.dataset_name = report.dataset.name
        self.models_by_name = {m.model.name: m for m in report.models}
        self.code = ""  # the fingerprint of the section being rendered (part of its figures' keys)
        self.cards = cards if cards is not None else CardIndex(self.ids)
        #: the rows a map links to their cards (an HTML image map), when they are among its dots
        self.linked = linked if linked is not None else np.zeros(0, np.int64)
        self.flagged_total = 0  # samples findings name, in all (``flagged`` may show fewer)

    @property
    def flagged(self) -> np.ndarray:
        """The samples findings name (in any layer or the build) that sampled maps always show: every
        one up to half the map's dots (``report.map_cap``), else each flag's worst in turn."""
        if not hasattr(self, "_flagged"):
            self._flagged, self.flagged_total = flagged_rows(self.report, max(self.options.map_cap // 2, 1))
        return self._flagged

    def colour(self, c: int) -> str:
        return hex_colour(self.colours[int(c)])

    def sample(self, row: Any, **extra: Any) -> dict[str, Any]:
        row = int(row)
        c = int(self.labels[row])
        thumb = self._thumbs(row)
        return {
            "row": row,
            "id": self.ids[row],
            "label": self.class_names[c],
            "colour": self.colour(c),
            "thumb": thumb,
            "card": self.cards.row(row),
            **extra,
        }

    def names(self, analysis: str, key: str) -> dict[str, Any] | None:
        """What the describers found a set of this section shares (``key``: the analysis's own
        key for the set), ready for the ``named`` macro; None: the set was not described."""
        full = f"{analysis}/{self.model}/{self.layer}/{key}" if self.layer else f"{analysis}/{key}"
        d = self.report.descriptions.get(full)
        if d is None:
            return None
        return {"names": d.phrases(), "tested": d.tested, "size": d.size}

    def image(
        self,
        thumbnail: np.ndarray,
        label: str,
        id: str,
        *,
        dataset: str,
        lines: tuple[dict[str, str], ...] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        """A sample-like dict for an image that is not a row of the report's samples (a compared
        dataset's), bordered in its class colour when the class is known; it gets a card of its own
        (``lines``: what the report says of it, each ``{"text", "href"}``)."""
        c = self.class_names.index(label) if label in self.class_names else None
        colour = self.colour(c) if c is not None else "#9aa3ad"
        thumb = thumbnail_uri(np.asarray(thumbnail), self.budget.thumb_quality)
        card = self.cards.image(ImageCard(image_anchor(dataset, id), id, dataset, label, colour, thumb, list(lines)))
        return {"row": -1, "id": id, "label": label, "colour": colour, "thumb": thumb, "card": card, **extra}

    def _key(self, name: str, data: tuple[Any, ...], *extra: Any) -> str:
        return digest(self._base_key, self.prefix, name, self.code, *extra, *data)

    def _fig(
        self, name: str, data: bytes, mime: str, alt: str, caption: str, png: bytes | None = None, cls: str = ""
    ) -> dict[str, Any]:
        fname = f"{self.prefix}{name}.png"
        self._files[fname] = png if png is not None else data
        w, h = _png_size(data) if mime == "image/png" else (0, 0)
        return {
            "name": fname,
            "uri": data_uri(data, mime),
            "alt": alt,
            "caption": caption,
            "cls": cls,
            "areas": [],
            "width": w,
            "height": h,
        }

    def figure(
        self,
        name: str,
        make: Callable[[], Figure],
        *,
        data: tuple[Any, ...] = (),
        alt: str,
        caption: str,
        cls: str = "",
        points: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """A plot, drawn by ``make`` unless the same ``data`` was drawn by the same code before.
        ``points``: (all samples' coordinates, the rows drawn as dots) of a map, whose linked rows
        become an HTML image map over the PNG (``areas``: position, card, label and file)."""
        if points is None:
            png = self._figs.get_or(self._key(name, data), f"{self.prefix}{name}.png", lambda: figure_png(make()))
            return self._fig(name, png, "image/png", alt, caption, cls=cls)
        coords, dots = points
        rows = np.intersect1d(self.linked, dots)
        key = self._key(name, data, "points", rows)
        blob = self._figs.get_or(
            key, f"{self.prefix}{name}.png", lambda: _pack(*figure_png_points(make(), coords[rows]))
        )
        png, xy = _unpack(blob)
        out = self._fig(name, png, "image/png", alt, caption, cls=cls)
        out["areas"] = [
            {
                "x": int(round(x)),
                "y": int(round(y)),
                "href": self.cards.row(r),
                "title": f"{self.class_names[self.labels[r]]} · {self.ids[r]}",
            }
            for r, (x, y) in zip(rows.tolist(), xy)
        ]
        out["map"] = f"m-{self.prefix}{name}"
        out["linked"] = len(rows)
        out["dots"] = len(dots)
        return out

    def mosaic(
        self, name: str, mosaic: Mosaic, *, data: tuple[Any, ...] = (), alt: str, caption: str
    ) -> dict[str, Any]:
        """A mosaic in the HTML as JPEG or PNG, whichever is smaller (upscaled pixel art favours PNG)."""
        key = self._key(name, data, "png", len(mosaic.rows), mosaic.pixels.shape)
        png = self._figs.get_or(key, f"{self.prefix}{name}.png", lambda: encode_png(mosaic.pixels))
        jpg = encode_jpeg(mosaic.pixels, self.budget.mosaic_quality)
        data_, mime = (png, "image/png") if len(png) <= len(jpg) else (jpg, "image/jpeg")
        return self._fig(name, data_, mime, alt, caption, png=png)
