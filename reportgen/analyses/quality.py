"""Image quality: per-image flags (dark, light, blurry, low information, grayscale in a colour set,
odd aspect ratio, odd size; ``compute.quality``) and the image properties that give the label
away (a property that tells one class from the rest: "every Bag is brighter" - a shortcut a model
can learn instead of the content)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..compute.enrichment import Ranked, rank_test
from ..compute.properties import PROPERTIES
from ..compute.quality import KINDS, QualityFlags, quality_flags
from ..results import Finding, Headline, SampleFlag, Samples, count, percent
from .base import HEADLINE_SAMPLES, BuildAnalysis, BuildInput, Where

if TYPE_CHECKING:
    from ..specification import ReportSpec

#: The properties that may give the label away, with the words for a class above the rest.
TELLING = {
    "brightness": "brighter",
    "contrast": "higher-contrast",
    "saturation": "more saturated",
    "colourfulness": "more colourful",
    "sharpness": "sharper",
    "entropy": "richer in tone",
    "aspect": "wider",
    "size": "larger",
}
BELOW = {
    "brightness": "darker",
    "contrast": "lower-contrast",
    "saturation": "less saturated",
    "colourfulness": "less colourful",
    "sharpness": "blurrier",
    "entropy": "flatter in tone",
    "aspect": "taller",
    "size": "smaller",
}
#: A property gives a class away at this AUROC (or 1 - AUROC) for the class against the rest.
SHORTCUT_AUROC = 0.9
#: The properties of how an image was taken or stored, not of what it shows: only these make a
#: shortcut finding (a thin digit 1 is "blurrier" and "flatter in tone" by its content).
ACQUISITION = ("brightness", "contrast", "saturation", "colourfulness", "aspect", "size")
#: Classes smaller than this are not judged.
MIN_CLASS = 20


@dataclass(frozen=True)
class Shortcut:
    prop: str
    cls: int
    auroc: float  # of the property for the class against the rest
    p: float

    @property
    def words(self) -> str:
        return TELLING[self.prop] if self.auroc > 0.5 else BELOW[self.prop]


@dataclass(frozen=True, eq=False)
class QualityFinding(Finding):
    flags: QualityFlags
    n: int
    shortcuts: tuple[Shortcut, ...]  # per property, the class it separates best (strongest first)
    audit_layers: tuple[tuple[str, str], ...]  # (model, layer) the quality metrics are reported on

    @property
    def flagged(self) -> int:
        return int(self.flags.any.sum())


class ImageQuality(BuildAnalysis):
    name = "quality"
    title = "Image quality"
    metrics = {
        "quality_issue_rate": (
            "Share of images with an image-quality flag (dark, light, blurry, low information, grayscale in a colour "
            "set, odd aspect ratio, odd size)."
        ),
    }

    def enabled(self, spec: ReportSpec) -> bool:
        return spec.report.audit

    def run(self, b: BuildInput) -> QualityFinding | None:
        props = b.samples.properties
        if props is None or not len(props):
            return None
        flags = quality_flags(props)
        labels = b.samples.labels
        counts = np.bincount(labels, minlength=len(b.samples.class_names))
        shortcuts = []
        for prop in TELLING:
            v = props[:, PROPERTIES.index(prop)]
            ranked = Ranked.of(v)
            if ranked.constant:
                continue
            best = None
            for c in np.flatnonzero(counts >= MIN_CLASS):
                if counts[c] > len(labels) - MIN_CLASS:
                    continue
                auroc, p, _ = rank_test(ranked, np.flatnonzero(labels == c))
                if best is None or abs(auroc - 0.5) > abs(best.auroc - 0.5):
                    best = Shortcut(prop, int(c), float(auroc), float(p))
            if best is not None:
                shortcuts.append(best)
        shortcuts.sort(key=lambda s: -abs(s.auroc - 0.5))
        audit = tuple(k for k, lr in b.layers.items() if "audit" in lr.findings)
        return QualityFinding(flags, len(props), tuple(shortcuts), audit)

    def layer_metrics(self, f: QualityFinding) -> dict:
        values = {"quality_issue_rate": f.flagged / f.n if f.n else 0.0}
        values.update({f"quality_{k}": int(f.flags.flags[:, i].sum()) for i, k in enumerate(KINDS)})
        return {key: dict(values) for key in f.audit_layers}

    def flags(self, f: QualityFinding) -> list[SampleFlag]:
        return [SampleFlag(f"{k.replace('_', ' ')} image", f.flags.rows(k), f"-{k}") for k in KINDS]

    def summary(self, f: QualityFinding, samples: Samples) -> dict:
        ids, names = samples.ids, samples.class_names
        return {
            "quality": {
                "flagged": f.flagged,
                "kinds": {k: [ids[r] for r in f.flags.rows(k)[:500]] for k in KINDS},
                "counts": {k: int(f.flags.flags[:, i].sum()) for i, k in enumerate(KINDS)},
                "set_wide": {k: round(v, 4) for k, v in f.flags.set_wide.items()},
                "label_shortcuts": [
                    {"property": s.prop, "class": names[s.cls], "auroc": round(s.auroc, 4), "p": float(f"{s.p:.3g}")}
                    for s in f.shortcuts
                ],
            }
        }

    def headlines(self, f: QualityFinding, where: Where) -> list[Headline]:
        out = []
        for kind in KINDS:
            rows = f.flags.rows(kind)
            if len(rows):
                share = len(rows) / f.n
                out.append(
                    Headline(
                        where.id("quality", kind),
                        "medium" if share > 0.01 else "low",
                        f"{count(len(rows), kind.replace('_', ' ') + ' image')} ({percent(share)}).",
                        f"#{where.anchor}-{kind}",
                        share,
                        rows=tuple(int(r) for r in rows[:HEADLINE_SAMPLES]),
                    )
                )
        names = where.class_names
        for s in f.shortcuts:
            strength = max(s.auroc, 1 - s.auroc)
            if strength < SHORTCUT_AUROC or s.prop not in ACQUISITION:
                continue
            out.append(
                Headline(
                    where.id("quality", f"shortcut/{s.prop}"),
                    "medium",
                    f"Images of {names[s.cls]} are {s.words} than the rest (AUROC {strength:.2f}): a model can read "
                    f"the label from the {s.prop} (a shortcut).",
                    f"#{where.anchor}-shortcuts",
                    abs(s.auroc - 0.5) * 2,
                )
            )
        return out
