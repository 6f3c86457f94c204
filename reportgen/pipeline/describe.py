"""The describe stage: every set of samples the analyses name (component ends, slices, the samples
whose neighbourhood changed most, a compared dataset) tested against every describer's columns.

For each set and column: the AUROC of the column for the set against the rest and its permutation
p-value (``reportgen.compute.enrichment``); a categorical column is one yes/no test per frequent
value. Benjamini-Hochberg over every test of the report; a name is kept when its q-value is at most
``report.describe.alpha`` and its AUROC (or 1 - AUROC) at least ``min_auroc``, at most one per
column and three per set, strongest first. A strong name from a metadata column or an image
property (not the model's head) on a component end or a weak slice becomes a finding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compute.enrichment import Ranked, benjamini_hochberg, indicator_test, rank_test, stratified_test
from ..describe import DESCRIBERS, Column, DescribeSource
from ..results import Description, Headline, Name, SampleSet
from ..specification import ReportSpec
from ..store.cache import Cache
from .embedding import Embedded

#: A categorical value is tested when at least this many samples have it (and it is among the most frequent).
MIN_COUNT = 5
MAX_VALUES = 30
#: A name this strong (AUROC >= 0.8 or <= 0.2) from a metadata column or an image property is a
#: finding, when it holds within classes too (AUROC >= 0.75 or <= 0.25 relabelling within each class):
#: a property that only follows the class (the digit 1 is plainer than the 8) is no shortcut.
FINDING_STRENGTH = 0.6
WITHIN_CLASS_STRENGTH = 0.5
#: Headline samples: the first rows of the set.
SHOWN = 6


@dataclass(frozen=True, eq=False)
class PlacedSet:
    """A set as the stage tests it: the set, where it sits in the report and whose head may name it."""

    set: SampleSet
    where: str  # "effnet · global_pool", or "" for a build analysis's set
    model: str


@dataclass
class _Test:
    placed: PlacedSet
    column: Column
    value: str | None  # categorical: the value tested
    auroc: float
    p: float
    share: float | None = None
    overall: float | None = None


class _Universe:
    """The samples a set is tested within: the reference dataset's, or the reference's followed by
    one compared dataset's. Columns are computed once per universe (and model) and ranked once."""

    def __init__(self, sources: list[DescribeSource], describers: list[Any]) -> None:
        self.sources, self.describers = sources, describers
        self.n = sum(len(s.indices) for s in sources)
        self.columns: dict[str | None, list[tuple[Column, Any]]] = {}

    def prepared(self, model: str | None) -> list[tuple[Column, Any]]:
        if model not in self.columns:
            out = []
            for d in self.describers:
                if d.per_model and model is None:
                    continue
                parts = [d.columns(s, model if d.per_model else None) for s in self.sources]
                names = [{c.name: c for c in cols} for cols in parts]
                for c in parts[0]:
                    if not all(c.name in m for m in names[1:]):
                        continue  # a column the compared dataset lacks
                    values = np.concatenate([m[c.name].values for m in names])
                    col = Column(c.describer, c.name, values, c.categorical, c.words, c.template, c.quoted)
                    out.append((col, _prepare(col)))
            self.columns[model] = out
        return self.columns[model]


def _prepare(c: Column) -> Any:
    if not c.categorical:
        r = Ranked.of(c.values)
        return None if r.constant else r
    values = np.asarray(c.values, dtype=object).astype(str)
    uniq, counts = np.unique(values, return_counts=True)
    keep = [(u, k) for u, k in zip(uniq, counts) if u != "" and MIN_COUNT <= k < len(values)]
    keep.sort(key=lambda t: -t[1])
    return [(str(u), values == u) for u, _ in keep[:MAX_VALUES]]


def _tests(placed: PlacedSet, universe: _Universe, rows: np.ndarray) -> list[_Test]:
    out = []
    for column, prepared in universe.prepared(None) + (universe.prepared(placed.model) if placed.model else []):
        if prepared is None:
            continue
        if column.categorical:
            for value, has in prepared:
                auroc, p, share, rest = indicator_test(has, rows)
                out.append(_Test(placed, column, value, auroc, p, share, rest))
        else:
            auroc, p, _ = rank_test(prepared, rows)
            out.append(_Test(placed, column, None, auroc, p))
    return out


def _name(t: _Test, q: float) -> Name:
    c = t.column
    if c.categorical:
        text = c.text(str(t.value))
    else:
        text = c.words[1] if t.auroc > 0.5 else c.words[0]
    return Name(c.describer, text, float(t.auroc), float(t.p), float(q), t.share, t.overall, c.name if c.quoted else "")


def describe_sets(
    spec: ReportSpec,
    data: Embedded,
    placed: list[PlacedSet],
    cache: Cache,
    labels: np.ndarray,
    properties: np.ndarray | None = None,
) -> tuple[dict[str, Description], list[Headline]]:
    """Every set's description (keyed by the set's key) and the findings strong names make."""
    opts = spec.report.describe
    describers = [DESCRIBERS[n]() for n in opts.describers if n in DESCRIBERS]
    if not describers or not placed:
        return {}, []
    models = {m.name: m for m in spec.models}

    def cached_array(kind: str, parts: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        from ..fingerprint import code_fingerprint

        return cache.array(kind, cache.key(kind, parts, code_fingerprint("reportgen.describe"), []), compute)

    def source(name: str, ds: Any, indices: np.ndarray, runs: tuple[Any, ...], props: Any = None) -> DescribeSource:
        return DescribeSource(
            name, ds, np.asarray(indices), {r.model.name: r for r in runs}, models, opts, spec.seed, cached_array, props
        )

    ref = source(data.ds.name, data.ds, data.runs[0].embeddings.indices, data.runs, properties)
    universes: dict[str, _Universe] = {"": _Universe([ref], describers)}
    for (name, runs), ds in zip(data.compared, data.compared_data):
        other = source(name, ds, runs[0].embeddings.indices, runs)
        universes[name] = _Universe([ref, other], describers)
    tests: list[_Test] = []
    sizes: dict[str, int] = {}
    for p in placed:
        universe = universes.get(p.set.dataset)
        if universe is None:
            continue
        rows = np.asarray(p.set.rows, np.int64)
        if p.set.dataset:  # the compared dataset's rows follow the reference's
            rows = rows + len(ref.indices)
        sizes[p.set.key] = len(rows)
        tests += _tests(p, universe, rows)
    q = benjamini_hochberg(np.asarray([t.p for t in tests])) if tests else np.zeros(0)
    strong = 2 * opts.min_auroc - 1
    by_set: dict[str, list[tuple[_Test, float]]] = {}
    tested: dict[str, int] = {}
    for t, qv in zip(tests, q):
        key = t.placed.set.key
        tested[key] = tested.get(key, 0) + 1
        enriched = not t.column.categorical or t.auroc > 0.5
        if qv <= opts.alpha and abs(t.auroc - 0.5) * 2 >= strong and enriched:
            by_set.setdefault(key, []).append((t, float(qv)))
    out: dict[str, Description] = {}
    candidates: list[tuple[PlacedSet, _Test, Name]] = []
    for p in placed:
        key = p.set.key
        if key not in sizes:
            continue
        chosen: list[tuple[_Test, Name]] = []
        seen: set[str] = set()
        passing = sorted(by_set.get(key, []), key=lambda x: (-abs(x[0].auroc - 0.5), x[1], x[0].column.name))
        for t, qv in passing:
            family = (
                "head" if t.column.describer == "head" else t.column.name
            )  # one name from the head: its classes in a list
            if family in seen:
                continue
            seen.add(family)
            named = _name(t, qv)
            if family == "head":
                more = [str(u.value) for u, _ in passing if u.column.describer == "head" and u is not t][:2]
                if more:
                    named = dataclasses.replace(named, also=tuple(more))
            chosen.append((t, named))
            if len(chosen) == 3:
                break
        names = tuple(n for _, n in chosen)
        out[key] = Description(key, p.set.title, p.where, p.set.anchor, sizes[key], names, tested.get(key, 0))
        if p.set.finding and not p.set.dataset:
            # the strongest name of each describer: a metadata column that follows the set (camera = B) is
            # the cause a reviewer can act on, even where the look it gave the images (blurrier) ranks first
            firsts: dict[str, tuple[_Test, Name]] = {}
            for t, n in chosen:
                if n.column and n.strength >= FINDING_STRENGTH:
                    firsts.setdefault(n.describer, (t, n))
            candidates += [(p, t, n) for t, n in firsts.values()]
    return out, _findings(candidates, labels, opts.alpha)


def _findings(candidates: list[tuple[PlacedSet, _Test, Name]], labels: np.ndarray, alpha: float) -> list[Headline]:
    """The strong names that hold within classes too (Bonferroni over the candidates) as findings:
    the strongest per layer and column, one finding a set (its metadata column and its look together,
    "camera = B ... and blurrier ..."; medium when a metadata column is among them, else low)."""
    held: dict[str, tuple[PlacedSet, list[tuple[Name, float]]]] = {}
    said: set[tuple[str, str]] = set()
    for p, t, n in sorted(candidates, key=lambda c: -c[2].strength):
        if (p.where, n.column) in said:
            continue
        rows = np.asarray(p.set.rows, np.int64)
        values = t.column.values
        if t.column.categorical:
            values = (np.asarray(values, dtype=object).astype(str) == str(t.value)).astype(np.float64)
        within, pv = stratified_test(np.asarray(values, np.float64), labels, rows, binary=t.column.categorical)
        same_side = (within - 0.5) * (n.auroc - 0.5) > 0
        if not same_side or abs(within - 0.5) * 2 < WITHIN_CLASS_STRENGTH or pv > alpha / len(candidates):
            continue
        said.add((p.where, n.column))
        held.setdefault(p.set.key, (p, []))[1].append((n, within))
    out = []
    for key, (p, got) in held.items():
        got.sort(key=lambda g: g[0].describer != "metadata")  # the column a reviewer can act on first
        rows = np.asarray(p.set.rows, np.int64)
        of = f" of {p.where}" if p.where else ""
        aurocs = ", ".join(f"{max(w, 1 - w):.2f}" for _, w in got)
        both = "both " if len(got) > 1 else ""
        said_how = f"{' and '.join(n.phrase() for n, _ in got)}, {both}within each class too (AUROC {aurocs})"
        columns = " and the ".join(dict.fromkeys(n.column for n, _ in got))
        out.append(
            Headline(
                f"describe/{key}",
                "medium" if any(n.describer == "metadata" for n, _ in got) else "low",
                f"{p.set.title}{of}: {said_how} - the layer may track the {columns}, not the content "
                "(a shortcut or a batch effect).",
                p.set.anchor,
                max(n.strength for n, _ in got),
                rows=tuple(int(r) for r in rows[:SHOWN]),
            )
        )
    return out
