"""Data audit (on one layer per model, the deepest by default): likely label errors, exact and
near-duplicate images, outliers.

Label errors: a sample is flagged when the mean of two out-of-sample opinions on its given label
is under ``LABEL_THRESHOLD``: a strongly regularised linear probe's out-of-fold probability of the
label, and the share of its 50 nearest neighbours that carry it. Chosen by measurement on
Fashion-MNIST with 4 % of labels flipped at random (docs/benchmarks.md): cleanlab's
``find_label_issues`` on the same probabilities flagged 3x too many samples (precision 0.2-0.35:
it also counts the data's natural class confusion), either opinion alone reached precision 0.8
only at recall 0.75-0.8, their mean reached both 0.84-0.85 and 0.85-0.88.

Exact duplicates: equal content hashes of the decoded images. Near duplicates ("twins"): the same
picture resampled, re-encoded, cropped, re-lit or shifted, decided on the images themselves (``reportgen.twins``: an
embedding cannot tell a copy from a look-alike, measured) with a threshold calibrated on edited
copies of the data set's own images; candidate pairs come from this layer's neighbour graph and
from the images' own nearest neighbours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..compute.kernels import isolated
from ..results import Finding, Headline, SampleFlag, Samples, SampleValues, count, finding_of, percent
from .base import HEADLINE_SAMPLES, LayerAnalysis, LayerInput, Where
from .metrics import MetricsFinding

if TYPE_CHECKING:
    from ..specification import ReportSpec

#: Flag a label when the mean of the probe's and the neighbours' support for it is under this.
#: Measured on 10,000 Fashion-MNIST images with 4 % of labels flipped, eight flip seeds, at 96 and
#: 224 px (benchmarks/labels.py, docs/benchmarks.md): 0.038 meets precision >= 0.8 / recall >= 0.8
#: at 96 px on all eight (0.04: seven) and precision >= 0.8 / recall >= 0.85 at 224 px on six (as 0.04).
LABEL_THRESHOLD = 0.038
#: Neighbours behind the agreement (fewer above AUDIT_K_ABOVE samples, to keep the graph cheap).
AUDIT_K = 50
AUDIT_K_LARGE = 20
AUDIT_K_ABOVE = 200_000
#: The probe's regularisation (scikit-learn's C): calibrated probabilities, not accuracy, matter here.
PROBE_C = 0.001
#: Samples the probe is fitted on (out-of-fold for them, the fold models' mean for the rest).
PROBE_CAP = 20_000
#: The probe reads the first principal components of the standardised layer: measured on 10,000
#: Fashion-MNIST images (global_pool, 1,280 dimensions), 128 components flag label errors as well
#: as all 1,280 (precision 0.79-0.86 at recall 0.84-0.87 over three seeds) in a quarter of the time.
PROBE_DIMS = 128


def audit_k(n: int) -> int:
    return AUDIT_K if n <= AUDIT_K_ABOVE else AUDIT_K_LARGE


@dataclass(frozen=True, eq=False)
class AuditFinding(Finding):
    quality: np.ndarray  # (N,) label quality: mean of the probe's and the neighbours' support for the given label
    suggested: np.ndarray  # (N,) the class the probe and the neighbours favour
    probe_pred: np.ndarray  # (N,) the probe's out-of-sample prediction (slices read it)
    label_issues: np.ndarray  # rows flagged, most doubtful first
    duplicate_groups: tuple[np.ndarray, ...]  # rows with identical image content, one array per group
    near_pairs: (
        np.ndarray
    )  # (P, 2) rows i < j whose images are twins (reportgen.twins), exact duplicates excluded, most alike first
    near_distances: np.ndarray  # their image differences
    near_threshold: float | None  # None: not looked for (no images)
    calibration: str  # how the threshold was set, in words
    outliers: np.ndarray  # rows far from the rest and from their own neighbours' neighbours (kernels.isolated)
    outlier_cut: float
    k: int
    n: int
    has_hashes: bool
    twin_budget: Mapping[str, int] = field(default_factory=dict)  # pairs proposed / prefiltered / skipped / verified
    twin_recall: Mapping[str, float] = field(default_factory=dict)  # edit family -> share of its copies found
    #: each near pair's embedding distance over the nearer of its images' next neighbour (NaN: not judged)
    near_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: each near pair: is its second image the first mirrored (``report.mirrored_copies``)
    near_mirrored: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    mirrors: bool = False  # mirrored pictures were looked for (``report.mirrored_copies``)

    @property
    def mirrored(self) -> np.ndarray:
        """Each near pair: is its second image the first mirrored (all False where none was looked for)."""
        m = self.near_mirrored
        return m if len(m) == len(self.near_pairs) else np.zeros(len(self.near_pairs), bool)

    @property
    def duplicates(self) -> int:
        """Samples that repeat another's image exactly (each group counts all but one)."""
        return int(sum(len(g) - 1 for g in self.duplicate_groups))


def probe_probabilities(
    x: np.ndarray, labels: np.ndarray, n_classes: int, *, seed: int, cap: int = PROBE_CAP
) -> np.ndarray:
    """(N, C) out-of-sample class probabilities of a strongly regularised logistic regression on
    the first PROBE_DIMS principal components of the standardised features:
    out-of-fold (5 folds) for a seeded stratified sample of at most ``cap`` rows, the mean of the
    five fold models for the others (none of which saw them)."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from ..datasets.selection import stratified_rows
    from ..streaming import gather_rows, row_chunks

    n = len(labels)
    rows = stratified_rows(labels, n_classes, min(cap, n), seed) if n > cap else np.arange(n)
    xs = np.asarray(gather_rows(x, rows), np.float64)
    ys = labels[rows]
    counts = np.bincount(ys, minlength=n_classes)
    folds = int(min(5, counts[counts > 0].min()))
    probs = np.full((n, n_classes), 1.0 / n_classes)
    if folds < 2 or (counts > 0).sum() < 2:
        return probs
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    dims = min(PROBE_DIMS, xs.shape[1], len(xs) - 1)
    scaler = (
        make_pipeline(StandardScaler(), PCA(dims, svd_solver="randomized", random_state=seed))
        if dims < xs.shape[1]
        else StandardScaler()
    )
    z = scaler.fit_transform(xs)
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notices: the probe is a measurement
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(z, ys):
            m = LogisticRegression(max_iter=500, C=PROBE_C).fit(z[train], ys[train])
            p = np.zeros((len(test), n_classes))
            p[:, m.classes_] = m.predict_proba(z[test])
            probs[rows[test]] = p
            models.append(m)
    if len(rows) < n:
        inside = np.zeros(n, bool)
        inside[rows] = True
        for s, c in row_chunks(x):
            out = ~inside[s : s + len(c)]
            if not out.any():
                continue
            zc = scaler.transform(np.asarray(c[out], np.float64))
            p = np.zeros((int(out.sum()), n_classes))
            for m in models:
                p[:, m.classes_] += m.predict_proba(zc) / len(models)
            probs[s + np.flatnonzero(out)] = p
    return probs


def label_quality(probs: np.ndarray, neighbours: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's support for its given label - the mean of the probe's out-of-sample
    probability (``probs``, N x C) and the share of its ``neighbours`` (N x k rows) that carry it -
    and the class both opinions together favour. A label is doubted below LABEL_THRESHOLD."""
    n, c = probs.shape
    k = neighbours.shape[1]
    share = np.zeros((n, c))
    np.add.at(share, (np.repeat(np.arange(n), k), labels[neighbours].ravel()), 1.0 / k)
    rows = np.arange(n)
    return (probs[rows, labels] + share[rows, labels]) / 2, np.argmax(probs + share, axis=1)


def duplicate_groups(hashes: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Rows sharing a content hash, one sorted array per group, in order of first row."""
    if hashes is None or not len(hashes):
        return ()
    keys = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.shape[1]))).ravel()
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)]
    groups = [np.sort(order[s:e]) for s, e in zip(starts, ends) if e - s > 1]
    return tuple(sorted(groups, key=lambda g: int(g[0])))


class Audit(LayerAnalysis):
    name = "audit"
    title = "Data audit"
    requires = ("metrics",)
    metrics = {
        "label_issue_rate": (
            "Share of samples whose label the probe and the neighbours both doubt (likely label errors)."
        ),
        "duplicate_rate": "Share of samples whose decoded image exactly repeats another's.",
        "near_duplicate_rate": (
            "Share of samples with a near-duplicate: the same picture resampled, re-encoded, cropped or re-lit "
            "(threshold calibrated on edited copies)."
        ),
    }

    def enabled(self, spec: ReportSpec) -> bool:
        return spec.report.audit

    def graph_neighbours(self, n: int, *, audit: bool) -> int:
        return audit_k(n) if audit else 0

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> AuditFinding | None:
        if not layer.audit:
            return None
        n, c = len(layer.labels), layer.n_classes
        y = layer.labels
        probs = np.asarray(
            layer.cached_array(
                "audit-probe",
                {"cap": PROBE_CAP, "C": PROBE_C, "dims": PROBE_DIMS, "seed": layer.seed},
                lambda: probe_probabilities(layer.x, y, c, seed=layer.seed),
            )
        )
        g = layer.graph
        k = min(audit_k(n), g.k)
        quality, suggested = label_quality(probs, g.indices[:, :k], y)
        issues = np.flatnonzero(quality < LABEL_THRESHOLD)
        issues = issues[np.lexsort((issues, quality[issues]))]
        groups = duplicate_groups(layer.samples.hashes)
        pairs, dists, thr = np.zeros((0, 2), np.int64), np.zeros(0, np.float32), None
        near_ratio, mirrored = np.zeros(0), np.zeros(0, bool)
        how = "not looked for: the dataset has no images"
        spent: dict[str, int] = {}
        recall: dict[str, float] = {}
        if layer.twins is not None:
            from ..compute.twins import TWIN_GRAPH_NEIGHBOURS, Budget, find_twins

            cal = layer.twins.calibration
            thr, how, recall = cal.threshold, cal.how, dict(cal.recall)
            budget = Budget()
            pairs, dists, mirrored = find_twins(
                layer.twins.signatures,
                g.indices,
                TWIN_GRAPH_NEIGHBOURS,
                thr,
                seed=layer.seed,
                exclude_identical=layer.samples.hashes,
                budget=budget,
                search=layer.twins.search,
                mirrors=cal.mirrors,
                crops=cal.finds_crops,
                compare=cal.compare,
            )
            spent = asdict(budget)
            if len(pairs):  # the model's second opinion: a copy sits on its original in the layer too
                from ..compute.twin_embedding import EMBED_RATIO, SURE, embedding_ratio

                near_ratio = embedding_ratio(layer.x, pairs, g.indices, g.distances, g.metric, layer.samples.hashes)
                if cal.look_alike:  # images alone cannot tell every copy from a look-alike here: it decides
                    # (NaN, no other neighbour known: not judged, kept), unless the pictures are conclusive
                    keep = ~(near_ratio > EMBED_RATIO) | (dists <= SURE * cal.threshold)
                    spent["rejected_by_embedding"] = int((~keep).sum())
                    pairs, dists, near_ratio, mirrored = pairs[keep], dists[keep], near_ratio[keep], mirrored[keep]
        outl, cut = isolated(g, finding_of(found, "metrics", MetricsFinding).knn_k)
        return AuditFinding(
            quality,
            suggested,
            np.argmax(probs, axis=1),
            issues,
            groups,
            pairs,
            dists,
            thr,
            how,
            outl,
            cut,
            k,
            n,
            layer.samples.hashes is not None,
            spent,
            recall,
            near_ratio,
            mirrored,
            layer.twins is not None and layer.twins.calibration.mirrors,
        )

    def metric_values(self, f: AuditFinding) -> dict:
        near_rows = len(np.unique(f.near_pairs)) if len(f.near_pairs) else 0
        return {
            "label_issue_rate": len(f.label_issues) / f.n,
            "label_issues": int(len(f.label_issues)),
            "duplicate_rate": f.duplicates / f.n if f.has_hashes else None,
            "duplicates": f.duplicates if f.has_hashes else None,
            "near_duplicate_rate": near_rows / f.n if f.near_threshold is not None else None,
            "near_duplicate_pairs": int(len(f.near_pairs)),
            "outliers": int(len(f.outliers)),
        }

    def summary(self, f: AuditFinding, samples: Samples) -> dict:
        ids, names = samples.ids, samples.class_names
        return {
            "audit": {
                "label_issues": [
                    {
                        "id": ids[r],
                        "label": names[samples.labels[r]],
                        "suggested": names[f.suggested[r]],
                        "quality": round(float(f.quality[r]), 4),
                    }
                    for r in f.label_issues[:5000]
                ],
                "label_threshold": LABEL_THRESHOLD,
                "neighbours": f.k,
                "duplicate_groups": [[ids[r] for r in g] for g in f.duplicate_groups[:200]],
                "near_duplicates": [
                    {
                        "a": ids[a],
                        "b": ids[b],
                        "difference": round(float(d), 5),
                        "embedding_ratio": None if not np.isfinite(r) else round(float(r), 4),
                        "mirrored": bool(m),
                    }
                    for (a, b), d, r, m in zip(
                        f.near_pairs[:500],
                        f.near_distances[:500],
                        f.near_ratio[:500] if len(f.near_ratio) == len(f.near_pairs) else np.full(500, np.nan),
                        f.mirrored,
                    )
                ],
                "near_threshold": f.near_threshold,
                "calibration": f.calibration,
                "near_recall_by_edit": {k: round(v, 3) for k, v in f.twin_recall.items()},
                "near_search": dict(f.twin_budget),
                "outliers": [ids[r] for r in f.outliers[:200]],
                "outlier_cut": round(f.outlier_cut, 5),
            }
        }

    def flags(self, f: AuditFinding) -> list[SampleFlag]:
        dups = np.concatenate(f.duplicate_groups) if f.duplicate_groups else np.zeros(0, np.int64)
        near = np.unique(f.near_pairs) if len(f.near_pairs) else np.zeros(0, np.int64)
        return [
            SampleFlag("likely label error", f.label_issues, "-labels"),
            SampleFlag("exact duplicate", dups, "-duplicates"),
            SampleFlag("near duplicate", near, "-near"),
            SampleFlag("outlier", f.outliers, "-outliers"),
        ]

    def sample_values(self, f: AuditFinding) -> list[SampleValues]:
        return [SampleValues("label support", f.quality), SampleValues("suggested label", f.suggested, "class")]

    def headlines(self, f: AuditFinding, where: Where) -> list[Headline]:
        out = []
        names = where.class_names
        n_issues = len(f.label_issues)
        if n_issues:
            labels = where.samples.labels
            pairs = Counter((int(labels[r]), int(f.suggested[r])) for r in f.label_issues)
            (a, b), m = pairs.most_common(1)[0]
            rate = n_issues / f.n
            mostly = (
                f", mostly {names[a]} labelled where {names[b]} is suggested ({m})"
                if m >= max(3, 0.2 * n_issues)
                else ""
            )
            out.append(
                Headline(
                    where.id("audit", "label_issues"),
                    "high" if rate > 0.05 else "medium" if rate > 0.01 else "low",
                    f"{count(n_issues, 'likely label error')} ({percent(rate)}) in {where.layer}{mostly}.",
                    f"#{where.anchor}-labels",
                    rate,
                    rows=tuple(int(r) for r in f.label_issues[:HEADLINE_SAMPLES]),
                )
            )
        if f.duplicate_groups:
            out.append(
                Headline(
                    where.id("audit", "duplicates"),
                    "medium",
                    (
                        f"{count(f.duplicates, 'image')} exactly repeat{'s' if f.duplicates == 1 else ''} another "
                        f"({count(len(f.duplicate_groups), 'group')} of identical images)."
                    ),
                    f"#{where.anchor}-duplicates",
                    f.duplicates / f.n,
                    rows=tuple(int(r) for g in f.duplicate_groups[:3] for r in g[:2]),
                )
            )
        if len(f.near_pairs):
            out.append(
                Headline(
                    where.id("audit", "near_duplicates"),
                    "low" if len(f.near_pairs) < 0.005 * f.n else "medium",
                    (
                        f"{count(len(f.near_pairs), 'pair')} of near-duplicate images (the same picture resampled, "
                        + (
                            f"re-encoded, cropped, re-lit or mirrored: {int(f.mirrored.sum()):,} mirrored)."
                            if f.mirrors
                            else "re-encoded, cropped or re-lit)."
                        )
                    ),
                    f"#{where.anchor}-near",
                    len(f.near_pairs) / f.n,
                    rows=tuple(int(r) for p in f.near_pairs[:3] for r in p),
                )
            )
        return out
