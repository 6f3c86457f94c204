"""Dataset comparison (train vs test, clean vs corrupted): each compared dataset goes through the
same model(s) and is measured against the reference per layer (MMD^2 with a permutation p-value,
a domain-classifier AUC) and placed in the reference's fitted frames (overlaid maps)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..figures import overlay_scatter
from ..kernels import domain_auc, mmd_permutation_test, sanitize
from ..reducers import REDUCERS
from ..results import Finding, Samples, slug
from .base import BuildAnalysis, BuildInput

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
class ShiftFinding(Finding):
    shifts: tuple[DatasetShift, ...]


class CompareDatasets(BuildAnalysis):
    name = "compare_datasets"
    title = "Dataset comparison"
    template = "sections/datasets.html"
    code = ("reportgen.kernels", "reportgen.figures")

    def enabled(self, spec) -> bool:
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
                    other = sanitize(xrun.embeddings.layers[layer])[0]
                    mmd2, p = mmd_permutation_test(a, other, seed=b.seed, permutations=PERMUTATIONS)
                    coords = {}
                    for method, fitted in b.fitted.get((m, layer), {}).items():
                        if not fitted.can_transform:
                            continue
                        try:
                            coords[method] = fitted.transform(other)
                        except Exception:  # a reducer that cannot transform: no overlay for it
                            continue
                    out.append(DatasetShift(name, m, layer, len(other), mmd2, p, PERMUTATIONS, domain_auc(a, other, seed=b.seed), coords))
        return ShiftFinding(tuple(out))

    def summary(self, f: ShiftFinding, samples: Samples) -> dict:
        return {"dataset_shift": [{"dataset": d.dataset, "model": d.model, "layer": d.layer, "samples": d.n, "mmd2": d.mmd2,
                                   "p_value": d.p_value, "permutations": d.permutations, "domain_auc": d.auc} for d in f.shifts]}

    def context(self, f: ShiftFinding, view) -> dict:
        rows = [{"dataset": d.dataset, "model": d.model, "layer": d.layer, "n": d.n, "mmd2": d.mmd2, "p": d.p_value, "perm": d.permutations, "auc": d.auc} for d in f.shifts]
        order = list(REDUCERS)
        keys = sorted({(d.model, d.layer, m) for d in f.shifts for m in d.coords}, key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else len(order)))
        figs = []
        for model, layer, method in keys:
            ref = view.models_by_name[model].layer(layer).maps[method].coords
            others = {d.dataset: d.coords[method] for d in f.shifts if d.model == model and d.layer == layer and method in d.coords}
            title = REDUCERS[method].title if method in REDUCERS else method
            figs.append(view.figure(f"datasets--{slug(model)}--{slug(layer)}-{method}",
                                    lambda ref=ref, others=others: overlay_scatter(ref, others, reference_name=view.dataset_name, seed=view.seed),
                                    data=(ref, *others.values()), alt=f"{title} of {layer}: datasets overlaid",
                                    caption=f"{model} · {layer}: {title} fitted on {view.dataset_name} (grey) with the other datasets placed in the same frame. Regions covered by one dataset only show where they differ."))
        return {"rows": rows, "figs": figs, "reference": view.dataset_name}
