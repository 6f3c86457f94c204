"""Dataset comparison (train vs test, clean vs corrupted): each compared dataset goes through the
same model(s) and is measured against the reference per layer (MMD^2 with a permutation p-value,
a domain-classifier AUC) and placed in the reference's fitted frames (overlaid maps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..compute.kernels import domain_auc, mmd_permutation_test
from ..compute.reference_search import reference_nearest
from ..results import Finding, Headline, SampleFlag, Samples, SampleSet, count, slug
from ..streaming import cleaned
from .base import HEADLINE_SAMPLES, BuildAnalysis, BuildInput, Where

if TYPE_CHECKING:
    from ..specification import ReportSpec

PERMUTATIONS = 200


@dataclass(frozen=True, eq=False)
class DatasetShift:
    dataset: str
    model: str
    layer: str
    n: int
    mmd2: float
    p_value: float
    permutations: int
    auc: float | None
    coords: dict[str, np.ndarray]  # reducer -> (n, 2) in the reference dataset's fitted frame


@dataclass(frozen=True, eq=False)
class Leak:
    """Samples of a compared dataset with a twin in the reference dataset (train -> test leakage)."""

    dataset: str
    model: str
    layer: str
    rows: np.ndarray  # rows of the compared dataset
    twins: np.ndarray  # their twins' rows in the reference
    distances: np.ndarray  # image differences (reportgen.twins), 0 for identical images
    exact: np.ndarray  # bool: identical image content
    threshold: float | None  # the twin threshold (None: the images could not be compared, identical ones only)
    ids: tuple[str, ...]  # ids of ``rows`` in the compared dataset
    thumbnails: np.ndarray  # thumbnails of ``rows`` (shown beside their twins)
    labels: tuple[str, ...]  # their labels, by the compared dataset's own class names
    mirrored: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool: the twin is the image mirrored
    mirrors: bool = False  # mirrored pictures were looked for (``report.mirrored_copies``)

    @property
    def is_mirrored(self) -> np.ndarray:
        """``mirrored`` for every row (all False where none was looked for)."""
        return self.mirrored if len(self.mirrored) == len(self.rows) else np.zeros(len(self.rows), bool)


@dataclass(frozen=True, eq=False)
class ShiftFinding(Finding):
    shifts: tuple[DatasetShift, ...]
    leaks: tuple[Leak, ...] = ()
    reference: str = ""


def leak_anchor(leak: Leak) -> str:
    """The anchor suffix of one compared dataset's leaked images (one per dataset and model)."""
    return f"leaks-{slug(leak.dataset)}-{slug(leak.model)}"


class CompareDatasets(BuildAnalysis):
    name = "compare_datasets"
    title = "Dataset comparison"
    metrics = {
        "leakage_count": (
            "Images of the compared datasets with a twin in the reference dataset: identical, or the same picture "
            "resampled, re-encoded, cropped or re-lit."
        )
    }

    def enabled(self, spec: ReportSpec) -> bool:
        return bool(spec.extra_datasets)

    def run(self, b: BuildInput) -> ShiftFinding | None:
        if not b.extra:
            return None
        out = []
        for name, xruns in b.extra:
            for run, xrun in zip(b.runs, xruns):
                m = run.model.name
                for layer in run.embeddings.layers:
                    a = b.x(m, layer)
                    other = cleaned(xrun.embeddings.layers[layer])[0]
                    mmd2, p = mmd_permutation_test(a, other, seed=b.seed, permutations=PERMUTATIONS)
                    coords = {}
                    for method, fitted in b.fitted.get((m, layer), {}).items():
                        if not fitted.can_transform:
                            continue
                        try:
                            coords[method] = fitted.transform(other)
                        except Exception:  # a reducer that cannot transform: no overlay for it
                            continue
                    out.append(
                        DatasetShift(
                            name, m, layer, len(other), mmd2, p, PERMUTATIONS, domain_auc(a, other, seed=b.seed), coords
                        )
                    )
        return ShiftFinding(tuple(out), tuple(self._leaks(b)), b.dataset_name)

    def _leaks(self, b: BuildInput) -> list[Leak]:
        """Twins across datasets (reported on the first model's audit layer): identical images by
        content hash, near-twins by ``reportgen.twins`` with the reference's calibrated threshold;
        candidates from the layer (each sample's nearest reference sample) and from the images."""
        from ..compute.twins import cross_twins, signatures

        run = b.runs[0]
        m = run.model.name
        layer = next((l for (mm, l), r in b.layers.items() if mm == m and "audit" in r.findings), None)
        if layer is None:
            return []
        ref_hashes = b.samples.hashes
        lookup = {}
        if ref_hashes is not None:
            keys = np.ascontiguousarray(ref_hashes).view(np.dtype((np.void, 16))).ravel()
            lookup = {k.tobytes(): i for i, k in enumerate(keys)}
        twin = b.twins()
        out = []
        for k, (name, xruns) in enumerate(b.extra):
            xr = xruns[0]
            n_other = len(xr.embeddings.ids)
            names = b.extra_class_names[k]
            rows_to = np.full(n_other, -1, np.int64)
            diff = np.full(n_other, np.inf, np.float32)
            exact = np.zeros(n_other, bool)
            flipped = np.zeros(n_other, bool)
            if twin is not None and xr.embeddings.thumbnails is not None and n_other:
                other = cleaned(xr.embeddings.layers[layer])[0]
                graph = b.graphs.get((m, layer))
                nearest, _ = reference_nearest(b.x(m, layer), other, graph, metric=b.options.metric, seed=b.seed)
                r, t, d, fl = cross_twins(
                    twin.signatures,
                    signatures(xr.embeddings.thumbnails, twin.signatures.shape[1]),
                    nearest[:, None],
                    twin.calibration.threshold,
                    seed=b.seed,
                    search=twin.search,
                    mirrors=twin.calibration.mirrors,
                    crops=twin.calibration.finds_crops,
                    compare=twin.calibration.compare,
                )
                if graph is not None and len(r) and twin.calibration.look_alike:
                    # where images alone cannot tell a copy from a look-alike: the model's second opinion
                    from ..compute.twin_embedding import EMBED_RATIO, SURE, cross_embedding_ratio

                    ratio = cross_embedding_ratio(
                        other, b.x(m, layer), r, t, graph.indices, graph.distances, graph.metric, ref_hashes
                    )
                    # only where the pictures are not conclusive: a leak clearly within the threshold stands
                    keep = ~(ratio > EMBED_RATIO) | (d <= SURE * twin.calibration.threshold)
                    r, t, d, fl = r[keep], t[keep], d[keep], fl[keep]
                rows_to[r], diff[r], flipped[r] = t, d, fl
            if xr.embeddings.hashes is not None and lookup:
                for i, h in enumerate(np.ascontiguousarray(xr.embeddings.hashes).view(np.dtype((np.void, 16))).ravel()):
                    j = lookup.get(h.tobytes())
                    if j is not None:
                        exact[i], rows_to[i], diff[i], flipped[i] = True, j, 0.0, False
            rows = np.flatnonzero(rows_to >= 0)
            rows = rows[np.lexsort((rows, diff[rows]))]
            thumbs = (
                np.asarray(xr.embeddings.thumbnails[np.sort(rows)])[np.argsort(np.argsort(rows))]
                if len(rows)
                else np.zeros((0, 1, 1, 3), np.uint8)
            )
            out.append(
                Leak(
                    name,
                    m,
                    layer,
                    rows,
                    rows_to[rows],
                    diff[rows],
                    exact[rows],
                    twin.calibration.threshold if twin else None,
                    tuple(xr.embeddings.ids[r] for r in rows),
                    thumbs,
                    tuple(names[y] for y in xr.embeddings.labels[rows].tolist()),
                    flipped[rows],
                    bool(twin is not None and twin.calibration.mirrors),
                )
            )
        return out

    def layer_metrics(self, f: ShiftFinding) -> dict:
        out: dict = {}
        for leak in f.leaks:
            entry = out.setdefault((leak.model, leak.layer), {"leakage_count": 0})
            entry["leakage_count"] += int(len(leak.rows))
        return out

    def sets(self, f: ShiftFinding) -> list[SampleSet]:
        """Each compared dataset against the reference: what sets it apart, in words."""
        out, seen = [], set()
        for d in f.shifts:
            if d.dataset in seen:
                continue
            seen.add(d.dataset)
            out.append(
                SampleSet(
                    f"dataset/{d.dataset}",
                    f"{d.dataset} against {f.reference}",
                    np.arange(d.n),
                    model=d.model,
                    dataset=d.dataset,
                )
            )
        return out

    def flags(self, f: ShiftFinding) -> list[SampleFlag]:
        return [
            SampleFlag(
                f"twin in {leak.dataset} ({leak.model} · {leak.layer})", np.unique(leak.twins), f"-{leak_anchor(leak)}"
            )
            for leak in f.leaks
            if len(leak.rows)
        ]

    def headlines(self, f: ShiftFinding, where: Where) -> list[Headline]:
        out = []
        for leak in f.leaks:
            if len(leak.rows):
                n_exact, n_mirrored = int(leak.exact.sum()), int(leak.is_mirrored.sum())
                said = [f"{n:,} {what}" for n, what in ((n_exact, "identical"), (n_mirrored, "mirrored")) if n]
                out.append(
                    Headline(
                        where.id("leakage", f"{leak.dataset}/{leak.layer}"),
                        "high",
                        f"{count(len(leak.rows), 'image')} of {leak.dataset} "
                        + ("has" if len(leak.rows) == 1 else "have")
                        + f" a near-twin in {f.reference}"
                        + (f" ({', '.join(said)})" if said else "")
                        + ": leakage across splits.",
                        f"#{where.anchor}-{leak_anchor(leak)}",
                        float(len(leak.rows)),
                        rows=tuple(int(r) for r in leak.twins[:HEADLINE_SAMPLES]),
                    )
                )
        return out

    def summary(self, f: ShiftFinding, samples: Samples) -> dict:
        return {
            "leakage": [
                {
                    "dataset": l.dataset,
                    "model": l.model,
                    "layer": l.layer,
                    "threshold": l.threshold,
                    "count": int(len(l.rows)),
                    "pairs": [
                        {
                            "id": i,
                            "twin": samples.ids[t],
                            "difference": round(float(d), 5),
                            "identical": bool(e),
                            "mirrored": bool(m),
                        }
                        for i, t, d, e, m in zip(l.ids[:500], l.twins, l.distances, l.exact, l.is_mirrored)
                    ],
                }
                for l in f.leaks
            ],
            "dataset_shift": [
                {
                    "dataset": d.dataset,
                    "model": d.model,
                    "layer": d.layer,
                    "samples": d.n,
                    "mmd2": d.mmd2,
                    "p_value": d.p_value,
                    "permutations": d.permutations,
                    "domain_auc": d.auc,
                }
                for d in f.shifts
            ],
        }
