"""Slices: groups of samples the layer keeps together (HDBSCAN clusters on the audit layer), each
with its size, class make-up, kNN and probe accuracy and most typical images, drawn on the map;
ranked by (overall accuracy - slice accuracy) x size, so the groups the representation handles
worst come first.

Clustered on the layer's nonlinear map (t-SNE, else UMAP, else PaCMAP; the first principal
components, standardised, when there is none), HDBSCAN's leaf clusters. Chosen by measurement
(docs/benchmarks.md): on 10,000 Fashion-MNIST images with 4 % of them corrupted by noise, the map's
clusters held the corrupted group as one slice (Jaccard 0.98) where clusters of 10 or 20
principal components did not (best Jaccard 0.11, half the samples left as noise).

Clustered on at most ``SLICE_CAP`` samples (a seeded stratified sample); the others join the slice
of their nearest clustered samples (in the same space).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..results import Finding, Headline, Samples, SampleSet, SampleValues, finding_of
from .audit import AuditFinding
from .base import HEADLINE_SAMPLES, LayerAnalysis, LayerInput, Where
from .metrics import MetricsFinding

if TYPE_CHECKING:
    from ..specification import ReportSpec

SLICE_CAP = 20_000
#: Principal components the clustering sees when the layer has no nonlinear map.
SLICE_COMPONENTS = 10
#: The smallest slice is 1/MIN_SLICE_SHARE of the clustered samples (at least 15).
MIN_SLICE_SHARE = 50


@dataclass(frozen=True)
class Slice:
    id: int  # 1-based rank (1: the worst)
    rows: np.ndarray
    knn_accuracy: float
    probe_accuracy: float | None
    makeup: tuple[tuple[int, int], ...]  # (class, count), largest first
    typical: np.ndarray  # rows nearest the slice's centre
    traits: tuple[str, ...]  # image statistics far from the whole set's ("dark", "low-contrast")
    harm: float  # (overall accuracy - slice accuracy) x size


#: Slices the report shows (its table, its map, its names).
SHOWN = 12


def weak(s: Slice, overall: float) -> bool:
    """A slice the representation handles clearly worse than the rest (a finding)."""
    return s.knn_accuracy < overall - 0.05 and len(s.rows) >= 20


@dataclass(frozen=True, eq=False)
class SlicesFinding(Finding):
    slices: tuple[Slice, ...]  # worst first
    assignment: np.ndarray  # (N,) slice id per sample (0: in no slice)
    overall: float
    clustered: int  # samples HDBSCAN saw
    map_method: str  # the map the slices are drawn on
    map_coords: np.ndarray | None  # (N, 2) that map's coordinates
    space: str = ""  # what was clustered, in words


def _traits(stats: np.ndarray, rows: np.ndarray) -> tuple[str, ...]:
    """Image statistics of a slice more than half a standard deviation from the whole set's mean."""
    words = {
        0: ("dark", "bright"),
        1: ("low-contrast", "high-contrast"),
        2: ("greyish", "colourful"),
        3: ("bluish", "reddish"),
    }
    sd = stats.std(0)
    out = []
    for j in range(min(4, stats.shape[1])):
        if sd[j] <= 0:
            continue
        z = (stats[rows, j].mean() - stats[:, j].mean()) / sd[j]
        if abs(z) >= 0.5:
            out.append(words[j][int(z > 0)])
    return tuple(out)


class Slices(LayerAnalysis):
    name = "slices"
    title = "Slices"
    requires = ("metrics", "audit")
    metrics = {
        "worst_slice_accuracy": (
            "kNN accuracy of the worst slice (a cluster of the layer the representation handles worst)."
        )
    }

    def enabled(self, spec: ReportSpec) -> bool:
        return spec.report.slices

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> SlicesFinding | None:
        from sklearn.cluster import HDBSCAN

        from ..compute.neighbours import nearest_fitted
        from ..datasets.selection import stratified_rows

        if not layer.audit or len(layer.labels) < 50:
            return None
        n, y = len(layer.labels), layer.labels
        method = next((m for m in ("tsne", "umap", "pacmap") if m in layer.maps), None)
        if method is not None:
            z = np.asarray(layer.maps[method].coords, np.float64)
            space = f"its {layer.maps[method].title} map"
        else:
            z = np.asarray(layer.pca.scores[:, : min(SLICE_COMPONENTS, layer.pca.k)], np.float64)
            space = f"its first {z.shape[1]} principal components (standardised)"
        sd = z.std(0)
        z = z / np.where(sd > 0, sd, 1)
        rows = stratified_rows(y, layer.n_classes, SLICE_CAP, layer.seed) if n > SLICE_CAP else np.arange(n)
        size = max(15, len(rows) // MIN_SLICE_SHARE)
        fit = (
            HDBSCAN(min_cluster_size=size, min_samples=10, cluster_selection_method="leaf", copy=True)
            .fit(z[rows])
            .labels_
        )
        assignment = np.zeros(n, np.int64)
        assignment[rows] = fit + 1  # 0: noise
        if len(rows) < n:
            rest = np.setdiff1d(np.arange(n), rows)
            pos, _ = nearest_fitted(z.astype(np.float32), rows, rest)
            votes = assignment[rows][pos]
            assignment[rest] = [Counter(v).most_common(1)[0][0] for v in votes]
        pred = finding_of(found, "metrics", MetricsFinding).knn_pred
        probe = finding_of(found, "audit", AuditFinding).probe_pred if "audit" in found else None
        correct = pred == y
        overall = float(correct.mean())
        raw = []
        for c in np.unique(assignment):
            if c == 0:
                continue
            members = np.flatnonzero(assignment == c)
            acc = float(correct[members].mean())
            centre = z[members].mean(0)
            near = members[np.argsort(((z[members] - centre) ** 2).sum(1), kind="stable")[:8]]
            makeup = tuple((int(k), int(v)) for k, v in Counter(y[members].tolist()).most_common())
            raw.append(
                (
                    members,
                    acc,
                    None if probe is None else float((probe[members] == y[members]).mean()),
                    makeup,
                    near,
                    _traits(layer.samples.image_stats, members),
                    (overall - acc) * len(members),
                )
            )
        raw.sort(key=lambda r: (-r[6], int(r[0][0])))
        slices = []
        for rank, r in enumerate(raw, start=1):
            slices.append(Slice(rank, *r))
        final = np.zeros(n, np.int64)
        for s in slices:
            final[s.rows] = s.id
        shown = method or ("pca" if "pca" in layer.maps else "")
        return SlicesFinding(
            tuple(slices), final, overall, len(rows), shown, layer.maps[shown].coords if shown else None, space
        )

    def metric_values(self, f: SlicesFinding) -> dict:
        return {"worst_slice_accuracy": min((s.knn_accuracy for s in f.slices), default=None), "slices": len(f.slices)}

    def sets(self, f: SlicesFinding) -> list[SampleSet]:
        return [
            SampleSet(f"slice{s.id}", f"Slice {s.id}", s.rows, f"-s{s.id}", finding=weak(s, f.overall))
            for s in f.slices[:SHOWN]
        ]

    def sample_values(self, f: SlicesFinding) -> list[SampleValues]:
        return [SampleValues("slice", f.assignment, "slice")]

    def summary(self, f: SlicesFinding, samples: Samples) -> dict:
        names, ids = samples.class_names, samples.ids
        return {
            "slices": [
                {
                    "slice": s.id,
                    "size": int(len(s.rows)),
                    "knn_accuracy": s.knn_accuracy,
                    "probe_accuracy": s.probe_accuracy,
                    "classes": {names[c]: k for c, k in s.makeup[:5]},
                    "traits": list(s.traits),
                    "typical": [ids[r] for r in s.typical],
                    "harm": round(s.harm, 3),
                }
                for s in f.slices[:30]
            ]
        }

    def headlines(self, f: SlicesFinding, where: Where) -> list[Headline]:
        names = where.class_names
        out = []
        for s in f.slices[:3]:
            if not weak(s, f.overall):
                continue
            top, k = s.makeup[0]
            who = (
                f"mostly {' '.join(s.traits) + ' ' if s.traits else ''}{names[top]}"
                if k >= 0.5 * len(s.rows)
                else f"{' '.join(s.traits) + ' ' if s.traits else ''}mixed classes"
            )
            gap = f.overall - s.knn_accuracy
            out.append(
                Headline(
                    where.id("slices", f"slice{s.id}"),
                    "high" if gap > 0.25 and len(s.rows) > 0.02 * len(f.assignment) else "medium",
                    (
                        f"Slice {s.id} of {where.layer} ({len(s.rows):,} images, {who}): kNN accuracy "
                        f"{s.knn_accuracy:.2f} vs {f.overall:.2f} overall."
                    ),
                    f"#{where.anchor}-s{s.id}",
                    s.harm,
                    rows=tuple(int(r) for r in s.typical[:HEADLINE_SAMPLES]),
                )
            )
        return out
