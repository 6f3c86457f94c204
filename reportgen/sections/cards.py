"""Sample cards: one for every sample the report shows (a gallery's thumbnail, a neighbour, a
finding's example, a linked point of a map), with its larger image, label, suggested label and
support, file name and metadata, its neighbours in each layer and every finding it is part of.

``CardIndex`` collects the samples as the sections show them (``View.sample`` registers each and
hands back its card's anchor); ``card_contexts`` then writes the cards' template context, linking a
neighbour only where it has a card of its own (no anchor of the report dangles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..report import ReportData
from ..results import LayerResult, SampleFlag, card_anchor, slug


@dataclass
class ImageCard:
    """A card for an image that is not one of the report's samples (a compared dataset's)."""

    anchor: str
    id: str
    dataset: str
    label: str
    colour: str
    thumb: str
    lines: list[dict[str, str]] = field(default_factory=list)  # {"text", "href"}: what the report says of it


class CardIndex:
    """The samples that get a card, in the order they were first shown, and the compared
    datasets' images shown beside them."""

    def __init__(self, ids: tuple[str, ...]) -> None:
        self.ids = ids
        self.rows: dict[int, None] = {}
        self.images: dict[str, ImageCard] = {}

    def row(self, row: int) -> str:
        """Register sample ``row``; the href of its card."""
        self.rows.setdefault(int(row), None)
        return f"#{card_anchor(self.ids[int(row)])}"

    def add(self, rows: Iterable[int]) -> None:
        for r in rows:
            self.rows.setdefault(int(r), None)

    def image(self, card: ImageCard) -> str:
        self.images.setdefault(card.anchor, card)
        return f"#{card.anchor}"

    def has(self, row: int) -> bool:
        return int(row) in self.rows

    def sorted_rows(self) -> np.ndarray:
        return np.asarray(sorted(self.rows), np.int64)


def image_anchor(dataset: str, sample_id: str) -> str:
    """The anchor of a compared dataset's image card ("x-" keeps it apart from the samples' "s-")."""
    return f"x-{slug(dataset, max_len=40)}--{slug(sample_id, max_len=60)}"


def flags_by_row(flags: Iterable[tuple[str, SampleFlag]], rows: np.ndarray) -> dict[int, list[dict[str, Any]]]:
    """For each of ``rows``: the flags (name, where, href) that name it, in the report's order."""
    wanted = set(int(r) for r in rows)
    out: dict[int, list[dict[str, Any]]] = {}
    for where, f in flags:
        for r in f.rows:
            r = int(r)
            if r in wanted:
                out.setdefault(r, []).append({"name": f.name, "where": where, "href": f.anchor, "finding": f.finding})
    return out


def _value_text(kind: str, v: Any, class_names: tuple[str, ...]) -> str:
    if kind == "class":
        return class_names[int(v)]
    if kind == "slice":
        return f"S{int(v)}" if int(v) > 0 else "none"
    return f"{float(v):.3f}"


def _layer_part(
    lr: LayerResult, row: int, report: ReportData, href: Callable[[int], str | None], count: int
) -> dict[str, Any]:
    """One layer's line of a card: the values every layer gives the sample (its kNN prediction) and
    its nearest samples, linked where they have a card; the layer's other values (label support,
    suggested label, slice) go to the card's head."""
    names = report.samples.class_names
    labels = report.samples.labels
    values = [
        {
            "name": v.name,
            "text": _value_text(v.kind, v.values[row], names),
            "href": f"#l-{lr.slug}-slices" if v.kind == "slice" and int(v.values[row]) > 0 else "",
            "per_layer": v.per_layer,
        }
        for v in lr.values
    ]
    neighbours = []
    if lr.neighbours is not None:
        for j in lr.neighbours[row, :count]:
            j = int(j)
            if j < 0:
                continue
            neighbours.append(
                {
                    "label": names[int(labels[j])],
                    "id": report.samples.ids[j],
                    "href": href(j) or "",
                    "same": bool(labels[j] == labels[row]),
                }
            )
    return {
        "name": f"{lr.model} · {lr.layer}",
        "href": f"#l-{lr.slug}",
        "columns": [v for v in values if v["per_layer"]],
        "more": [v for v in values if not v["per_layer"]],
        "neighbours": neighbours,
    }


def card_contexts(
    report: ReportData,
    index: CardIndex,
    thumb: Callable[[int], str],
    colour: Callable[[int], str],
    *,
    neighbours: int = 5,
) -> list[dict[str, Any]]:
    """The template context of every card of ``index``, in the samples' order (``neighbours``:
    the nearest samples listed per layer)."""
    samples = report.samples
    rows = index.sorted_rows()
    flags = [(f"{lr.model} · {lr.layer}", f) for lr in report.layers for f in lr.flags]
    flags += [("build", f) for f in report.build_flags]
    flagged = flags_by_row(flags, rows)

    def href(j: int) -> str | None:
        return f"#{card_anchor(samples.ids[j])}" if index.has(j) else None

    cards = []
    for r in rows:
        r = int(r)
        c = int(samples.labels[r])
        parts = [_layer_part(lr, r, report, href, neighbours) for lr in report.layers]
        columns = list(dict.fromkeys(v["name"] for p in parts for v in p["columns"]))
        for p in parts:
            have = {v["name"]: v for v in p["columns"]}
            p["cells"] = [have.get(name) for name in columns]
        cards.append(
            {
                "anchor": card_anchor(samples.ids[r]),
                "id": samples.ids[r],
                "label": samples.class_names[c],
                "colour": colour(c),
                "thumb": thumb(r),
                "metadata": [(k, v[r]) for k, v in samples.metadata.items()],
                "layers": parts,
                "columns": columns,
                "more": [(p["name"], p["more"]) for p in parts if p["more"]],
                "flags": flagged.get(r, []),
            }
        )
    return cards


def all_flags(report: ReportData) -> list[tuple[str, str, SampleFlag]]:
    """Every flag of the report, with the layer it is about ("" for the build) and its anchor."""
    out = [(f"l-{lr.slug}", f"{lr.model} · {lr.layer}", f) for lr in report.layers for f in lr.flags]
    out += [("", "", f) for f in report.build_flags]
    return [(a, w, f) for a, w, f in out if len(f.rows)]


def round_robin(lists: Sequence[np.ndarray], cap: int) -> list[int]:
    """The first rows of each list in turn (each list worst first), without repeats, up to ``cap``."""
    seen: dict[int, None] = {}
    depth = 0
    longest = max((len(x) for x in lists), default=0)
    while len(seen) < cap and depth < longest:
        for x in lists:
            if depth < len(x):
                seen.setdefault(int(x[depth]), None)
                if len(seen) >= cap:
                    break
        depth += 1
    return list(seen)


def flagged_rows(report: ReportData, cap: int) -> tuple[np.ndarray, int]:
    """The flagged samples a map shows, and how many are flagged in all: every one when they are
    at most ``cap``, else each flag's worst in turn up to ``cap`` (a million of tiled copies are
    each an exact duplicate: a map cannot show them all, nor needs to)."""
    lists = [np.asarray(f.rows, np.int64) for _, _, f in all_flags(report) if f.finding]
    every = np.unique(np.concatenate(lists)) if lists else np.zeros(0, np.int64)
    if len(every) <= cap:
        return every, len(every)
    return np.unique(np.asarray(round_robin(lists, cap), np.int64)), len(every)
