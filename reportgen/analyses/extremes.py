"""Extremity galleries (Captum's Embedding Explorer): for each component, the samples with the
lowest and the highest scores, and the class make-up of each end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..compute.kernels import ComponentEnds, component_ends
from ..results import Finding, SampleFlag, Samples, SampleSet, finding_of
from .base import LayerAnalysis, LayerInput
from .pca import PcaFinding


@dataclass(frozen=True, eq=False)
class ExtremesFinding(Finding):
    ends: tuple[ComponentEnds, ...]
    low_scores: tuple[np.ndarray, ...]  # scores of ``ends[i].low``
    high_scores: tuple[np.ndarray, ...]
    ratios: np.ndarray  # explained-variance ratio of each component with a gallery
    eta2: np.ndarray
    #: each component's ends as sets to put into words: report.describe.end_share of the samples at each end
    end_sets: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


def makeup(rows: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> str:
    """'7 of 8: Sneaker (+ 1× Sandal)' - the class make-up of one end of a component."""
    counts = np.bincount(labels[rows], minlength=len(names))
    top = [i for i in np.argsort(-counts, kind="stable") if counts[i]]
    if not top:
        return ""
    rest = ", ".join(f"{counts[i]}× {names[i]}" for i in top[1:4]) + (" ..." if len(top) > 4 else "")
    return f"{counts[top[0]]} of {len(rows)}: {names[top[0]]}" + (f" (+ {rest})" if rest else "")


#: A component's end, as a set to name, holds at most this many samples.
END_SET_CAP = 2000


class Extremes(LayerAnalysis):
    name = "extremes"
    title = "Extremity galleries"
    requires = ("pca",)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> ExtremesFinding:
        pca = finding_of(found, "pca", PcaFinding)
        n = len(layer.x)
        opts = layer.options
        ends = tuple(
            component_ends(
                layer.pca, components=min(opts.gallery_components, pca.k), size=min(opts.gallery_size, max(1, n // 2))
            )
        )
        sc = layer.pca.scores
        size = int(np.clip(round(opts.describe.end_share * n), len(ends[0].low) if ends else 1, max(1, n // 4)))
        wide = component_ends(layer.pca, components=len(ends), size=min(size, END_SET_CAP))
        return ExtremesFinding(
            ends,
            tuple(sc[e.low, e.component] for e in ends),
            tuple(sc[e.high, e.component] for e in ends),
            np.asarray([pca.explained_variance_ratio[e.component] for e in ends]),
            np.asarray([pca.eta2[e.component] for e in ends]),
            tuple((e.low, e.high) for e in wide),
        )

    def sets(self, f: ExtremesFinding) -> list[SampleSet]:
        out = []
        for e, (low, high) in zip(f.ends, f.end_sets):
            pc = e.component + 1
            out += [
                SampleSet(f"pc{pc}-low", f"PC{pc}'s low end", low, f"-pc{pc}", finding=True),
                SampleSet(f"pc{pc}-high", f"PC{pc}'s high end", high, f"-pc{pc}", finding=True),
            ]
        return out

    def flags(self, f: ExtremesFinding) -> list[SampleFlag]:
        out = []
        for e in f.ends:
            pc = e.component + 1
            out += [
                SampleFlag(f"PC{pc} low end", e.low, f"-pc{pc}", finding=False),
                SampleFlag(f"PC{pc} high end", e.high, f"-pc{pc}", finding=False),
            ]
        return out

    def summary(self, f: ExtremesFinding, samples: Samples) -> dict:
        ids = samples.ids
        return {
            "extremes": [
                {
                    "component": e.component + 1,
                    "low": [ids[r] for r in e.low],
                    "high": [ids[r] for r in e.high],
                    "low_scores": [float(v) for v in lo],
                    "high_scores": [float(v) for v in hi],
                }
                for e, lo, hi in zip(f.ends, f.low_scores, f.high_scores)
            ]
        }
