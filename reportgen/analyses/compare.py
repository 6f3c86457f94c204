"""Model comparison (several models or checkpoints on the same samples): linear CKA between every
pair of layers, each layer's maps in one frame (fitted on the reference, applied to the others:
3LC's fit-once-apply-to-others), and per class the change in kNN accuracy and centroid position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..compute.kernels import per_class_accuracy
from ..compute.similarity import CkaTable, cka_table
from ..results import Finding, Headline, SampleFlag, Samples, SampleSet, finding_of, slug
from .base import HEADLINE_SAMPLES, BuildAnalysis, BuildInput, Where
from .metrics import MetricsFinding

if TYPE_CHECKING:
    from ..specification import ReportSpec


@dataclass(frozen=True, eq=False)
class SharedFrame:
    layer: str
    method: str
    reference: str
    coords: dict[str, np.ndarray]  # model -> (N, 2), the reference's own fitted coordinates first


@dataclass(frozen=True, eq=False)
class ClassChange:
    model: str
    layer: str
    knn_reference: np.ndarray  # (C,) per-class kNN accuracy of the reference
    knn_other: np.ndarray
    centroid_shift: (
        np.ndarray | None
    )  # (C,) centroid distance in the reference PCA frame / mean reference centroid spread


@dataclass(frozen=True, eq=False)
class NeighbourDiff:
    """How one layer's neighbourhoods changed from the reference model to another."""

    model: str
    layer: str
    k: int
    overlap: np.ndarray  # (N,) Jaccard overlap of each sample's k-neighbour sets
    most_changed: np.ndarray  # rows with the lowest overlap
    before: np.ndarray  # (len(most_changed), m) their neighbours in the reference
    after: np.ndarray  # ... and in the other model
    confusion_growth: tuple[
        tuple[int, int, float, float], ...
    ]  # (class, neighbour class, before, after), largest growth first

    @property
    def mean_overlap(self) -> float:
        return float(self.overlap.mean())

    @property
    def moved(self) -> float:
        """Share of samples that kept fewer than half their neighbours (Jaccard < 1/3)."""
        return float((self.overlap < 1 / 3).mean())


@dataclass(frozen=True, eq=False)
class Comparison(Finding):
    reference: str
    names: tuple[str, ...]  # "model · layer" for every CKA row/column
    cka: np.ndarray  # debiased linear CKA (unbiased HSIC): about 0 for unrelated representations
    frames: tuple[SharedFrame, ...] = ()
    changes: tuple[ClassChange, ...] = ()
    notes: tuple[str, ...] = field(default=())
    mutual_knn: np.ndarray | None = None  # (L, L) mean share of k nearest neighbours two layers agree on
    diffs: tuple[NeighbourDiff, ...] = ()
    cka_stats: CkaTable | None = None  # biased values, permutation p-values and bootstrap intervals


#: Neighbours compared by the diff (and the mutual-kNN alignment).
DIFF_K = 10
#: The samples whose neighbourhoods changed most, as a set to put into words: this share of them.
CHANGED_SHARE = 0.05


def _cka_summary(comp: Comparison) -> dict[str, Any]:
    def rows(m: np.ndarray) -> list[list[float]]:
        return [[round(float(v), 5) for v in row] for row in m]

    out: dict[str, Any] = {"names": list(comp.names), "matrix": rows(comp.cka), "estimator": "debiased (unbiased HSIC)"}
    t = comp.cka_stats
    if t is not None:
        out.update(
            biased=rows(t.biased),
            low=rows(t.low),
            high=rows(t.high),
            p=rows(t.p),
            subsample=t.subsample,
            permutations=t.permutations,
            bootstraps=t.bootstraps,
        )
    return out


def neighbour_confusion(indices: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C): for samples of class c, the mean share of their neighbours of class c'."""
    k = indices.shape[1]
    m = np.zeros((n_classes, n_classes))
    np.add.at(m, (np.repeat(labels, k), labels[indices].ravel()), 1.0 / k)
    counts = np.bincount(labels, minlength=n_classes)
    return m / np.where(counts > 0, counts, 1)[:, None]


def jaccard_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, |A ∩ B| / |A ∪ B| of two (N, k) neighbour index arrays."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    shared = (both[:, 1:] == both[:, :-1]).sum(1)
    k = a.shape[1]
    return shared / (2 * k - shared)


def neighbour_diff(
    model: str, layer: str, before: np.ndarray, after: np.ndarray, labels: np.ndarray, n_classes: int, k: int = DIFF_K
) -> NeighbourDiff:
    a, b = before[:, :k], after[:, :k]
    j = jaccard_rows(a, b)
    worst = np.argsort(j, kind="stable")[:8]
    ca, cb = neighbour_confusion(a, labels, n_classes), neighbour_confusion(b, labels, n_classes)
    delta = cb - ca
    np.fill_diagonal(delta, -np.inf)
    order = np.argsort(-delta, axis=None, kind="stable")[:6]
    grown = tuple(
        (int(i // n_classes), int(i % n_classes), float(ca.flat[i]), float(cb.flat[i]))
        for i in order
        if delta.flat[i] > 0.01
    )
    return NeighbourDiff(model, layer, k, j, worst, before[worst, :6], after[worst, :6], grown)


class CompareModels(BuildAnalysis):
    name = "compare_models"
    title = "Model comparison"
    metrics = {
        "neighbour_overlap": (
            "Mean Jaccard overlap of each sample's 10 nearest neighbours in this model's layer and the reference "
            "model's "
            "(1: the same neighbourhoods)."
        ),
        "cka_to_reference": (
            "Debiased linear CKA between this model's layer and the reference model's same layer (unbiased HSIC: "
            "about 0 for unrelated representations, 1 for the same up to rotation and scale)."
        ),
    }

    def enabled(self, spec: ReportSpec) -> bool:
        return len(spec.models) > 1

    def run(self, b: BuildInput) -> Comparison | None:
        if len(b.runs) < 2:
            return None
        labels, n_classes = b.samples.labels, len(b.samples.class_names)
        keys = [(r.model.name, layer) for r in b.runs for layer in r.embeddings.layers]
        names = tuple(f"{m} · {l}" for m, l in keys)
        table = cka_table([b.x(*key) for key in keys], seed=b.seed)
        cka = table.debiased
        frames: dict[tuple[str, str], SharedFrame] = {}
        changes, notes = [], []
        ref = b.reference
        for run in b.runs:
            other = run.model.name
            if other == ref:
                continue
            for layer in run.embeddings.layers:
                base = b.layers.get((ref, layer))
                if base is None:
                    continue
                mine = b.layers[(other, layer)]
                ref_acc = per_class_accuracy(
                    finding_of(base.findings, "metrics", MetricsFinding).knn_pred, labels, n_classes
                )
                oth_acc = per_class_accuracy(
                    finding_of(mine.findings, "metrics", MetricsFinding).knn_pred, labels, n_classes
                )
                shift = None
                if base.dim == mine.dim:
                    x_other = b.x(other, layer)
                    p = b.pca[(ref, layer)]
                    oth_scores = p.transform(x_other)
                    cent_ref = np.stack(
                        [
                            p.scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan)
                            for c in range(n_classes)
                        ]
                    )
                    cent_oth = np.stack(
                        [
                            oth_scores[labels == c].mean(0) if (labels == c).any() else np.full(p.k, np.nan)
                            for c in range(n_classes)
                        ]
                    )
                    spread = np.nanmean(np.linalg.norm(cent_ref - np.nanmean(cent_ref, 0), axis=1))
                    shift = np.linalg.norm(cent_oth - cent_ref, axis=1) / (spread if spread > 0 else 1.0)
                    for method, fitted in b.fitted.get((ref, layer), {}).items():
                        if not fitted.can_transform:
                            continue
                        try:
                            moved = fitted.transform(x_other)
                        except Exception as exc:  # a library's transform can refuse (e.g. PaCMAP without a saved tree)
                            notes.append(
                                f"{method} frame of {layer}: could not place {other} ({type(exc).__name__}: {exc})"
                            )
                            continue
                        frame = frames.setdefault(
                            (layer, method), SharedFrame(layer, method, ref, {ref: base.maps[method].coords})
                        )
                        frame.coords[other] = moved
                else:
                    notes.append(
                        f"{other} · {layer} has {mine.dim} dimensions, the reference {base.dim}: no shared frame "
                        "(CKA and per-class kNN still compare them)."
                    )
                changes.append(ClassChange(other, layer, ref_acc, oth_acc, shift))
        diffs, mutual = [], None
        if b.graphs:
            k = min([DIFF_K] + [b.graphs[key].k for key in keys if key in b.graphs])
            mutual = np.eye(len(keys))
            for i in range(len(keys)):
                for j in range(i + 1, len(keys)):
                    gi, gj = b.graphs.get(keys[i]), b.graphs.get(keys[j])
                    if gi is not None and gj is not None:
                        both = np.sort(np.concatenate([gi.indices[:, :k], gj.indices[:, :k]], axis=1), axis=1)
                        mutual[i, j] = mutual[j, i] = float((both[:, 1:] == both[:, :-1]).sum(1).mean() / k)
            for run in b.runs:
                if run.model.name == ref:
                    continue
                for layer in run.embeddings.layers:
                    g0, g1 = b.graphs.get((ref, layer)), b.graphs.get((run.model.name, layer))
                    if g0 is not None and g1 is not None:
                        diffs.append(
                            neighbour_diff(run.model.name, layer, g0.indices, g1.indices, labels, n_classes, k)
                        )
        return Comparison(
            ref, names, cka, tuple(frames.values()), tuple(changes), tuple(notes), mutual, tuple(diffs), table
        )

    def layer_metrics(self, comp: Comparison) -> dict:
        out: dict = {
            (d.model, d.layer): {"neighbour_overlap": d.mean_overlap, "neighbours_moved": d.moved} for d in comp.diffs
        }
        at = {name: i for i, name in enumerate(comp.names)}
        for name, i in at.items():
            model, layer = name.split(" · ", 1)
            ref = at.get(f"{comp.reference} · {layer}")
            if model != comp.reference and ref is not None:
                out.setdefault((model, layer), {})["cka_to_reference"] = round(float(comp.cka[i, ref]), 5)
        return out

    def sets(self, comp: Comparison) -> list[SampleSet]:
        out = []
        for d in comp.diffs:
            n = len(d.overlap)
            size = int(np.clip(round(CHANGED_SHARE * n), min(20, n), max(1, n // 4)))
            rows = np.argsort(d.overlap, kind="stable")[:size]
            out.append(
                SampleSet(
                    f"diff/{d.model}/{d.layer}",
                    f"The samples whose neighbours changed most in {d.model} · {d.layer}",
                    rows,
                    f"-diff-{slug(d.model)}-{slug(d.layer)}",
                    model=d.model,
                )
            )
        return out

    def flags(self, comp: Comparison) -> list[SampleFlag]:
        return [
            SampleFlag(
                f"neighbours changed most in {d.model} · {d.layer}",
                d.most_changed,
                f"-diff-{slug(d.model)}-{slug(d.layer)}",
            )
            for d in comp.diffs
        ]

    def headlines(self, comp: Comparison, where: Where) -> list[Headline]:
        names = where.class_names
        out = []
        for d in sorted(comp.diffs, key=lambda d: d.mean_overlap)[:3]:
            grown = ""
            if d.confusion_growth:
                c, c2, before, after = d.confusion_growth[0]
                grown = f"; {names[c]} → {names[c2]} neighbour confusion up {100 * (after - before):.0f} points"
            sev = "high" if d.moved > 0.3 else "medium" if d.moved > 0.1 else "low"
            out.append(
                Headline(
                    where.id("diff", f"{d.model}/{d.layer}"),
                    sev,
                    (
                        f"{d.model} moved {100 * d.moved:.0f} % of samples' neighbourhoods in {d.layer} against "
                        f"{comp.reference} (mean overlap {d.mean_overlap:.2f}){grown}."
                    ),
                    f"#{where.anchor}-diff-{slug(d.model)}-{slug(d.layer)}",
                    d.moved,
                    rows=tuple(int(r) for r in d.most_changed[:HEADLINE_SAMPLES]),
                )
            )
        return out

    def summary(self, comp: Comparison, samples: Samples) -> dict:
        names = samples.class_names
        return {
            "comparison": {
                "reference": comp.reference,
                "cka": _cka_summary(comp),
                "frames": [{"layer": f.layer, "method": f.method, "models": list(f.coords)} for f in comp.frames],
                "changes": [
                    {
                        "model": ch.model,
                        "layer": ch.layer,
                        "per_class": {
                            names[c]: {
                                "knn_reference": _f(ch.knn_reference[c]),
                                "knn": _f(ch.knn_other[c]),
                                "centroid_shift": None if ch.centroid_shift is None else _f(ch.centroid_shift[c]),
                            }
                            for c in range(len(names))
                        },
                    }
                    for ch in comp.changes
                ],
                "notes": list(comp.notes),
                "diffs": [
                    {
                        "model": d.model,
                        "layer": d.layer,
                        "k": d.k,
                        "neighbour_overlap": d.mean_overlap,
                        "neighbours_moved": d.moved,
                        "most_changed": [
                            {"id": samples.ids[r], "overlap": float(d.overlap[r])} for r in d.most_changed
                        ],
                        "confusion_growth": [
                            {"class": names[c], "neighbour_class": names[c2], "before": bef, "after": aft}
                            for c, c2, bef, aft in d.confusion_growth
                        ],
                    }
                    for d in comp.diffs
                ],
            }
        }


def _f(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
