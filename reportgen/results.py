"""Typed, frozen results: what each stage hands to the next. No field is filled in later.

    extract   -> ModelRun (ModelInfo + Embeddings)
    analyse   -> LayerResult (maps + one Finding per analysis) per model and layer
    pipeline  -> ReportData (everything the report shows; ``reportgen.report``) -> render -> BuildResult

Every class here holds plain values and NumPy arrays, separate from whatever computed them: no
model, no fitted estimator, no open file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import numpy as np

from .images import Preprocess

#: A number (or a small nested mapping of numbers) in summary.json's per-layer ``metrics``.
MetricValue = Union[float, int, str, None, Mapping[str, Mapping[str, Union[float, int, None]]]]  # noqa: UP007


def slug(name: str, *, max_len: int = 80) -> str:
    """A safe file-name fragment for any user-given name (layer ``../../x`` -> ``x``)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")
    s = re.sub(r"\.{2,}", ".", s)
    if not s:
        s = "x"
    if len(s) > max_len or s != name:
        s = f"{s[: max_len - 9]}-{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return s


def percent(share: float, digits: int = 1) -> str:
    """A share as the report writes it (headlines and the templates' ``pct``): ``digits`` decimals,
    or one significant digit where those would round a share that is not zero to zero (a reviewer
    reads "0.0 %" as none: 489 of a million is "0.05 %")."""
    if share == 0 or abs(100 * share) >= 10.0**-digits:
        return f"{100 * share:.{digits}f} %"
    return f"{100 * share:.1g} %"


#: Image differences under this are float32 rounding, none: a mirrored copy aligned to its original
#: reads 1e-14-3e-13 (a squared residual of ~1e-7 per pixel); a real one, a rounded grey level, 1e-7 or more.
NO_DIFFERENCE = 1e-9


def difference(d: float) -> str:
    """An image difference as the galleries write it: 4 decimals, or one significant digit where
    those would round a difference that is not zero to zero ("0.0000" reads as identical pictures;
    a grey copy of a soft blob differs by 0.00003); under NO_DIFFERENCE, none."""
    d = 0.0 if abs(float(d)) < NO_DIFFERENCE else float(d)
    if d == 0 or abs(d) >= 5e-5:
        return f"{d:.4f}"
    return f"{d:.{-int(np.floor(np.log10(abs(d))))}f}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun as a headline writes them: thousands separated, singular for one
    (``count(1, "pair")`` -> "1 pair", ``count(12000, "image")`` -> "12,000 images")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


# ----------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class ModelInfo:
    """What a report says about a model: identity and preprocessing, never the module itself."""

    name: str
    arch: str
    source: str  # "random init" / "packaged:..." / "checkpoint:..." / "hub (pretrained)" / "factory:..." / "input file"
    weights_sha256: str
    preprocess: Preprocess | None  # None: the embeddings were given as input
    device: str  # where the forward pass ran, or why none ran
    precision: str = "fp32"
    feeding: Mapping[str, str] = field(default_factory=dict)  # where images were resized and decoded (extract.Feeding)
    agreement: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict
    )  # layer -> a reduced precision's agreement with fp32


@dataclass(frozen=True, eq=False)
class Embeddings:
    """One model's embeddings of one dataset selection (memory-mapped from the store, or given)."""

    key: str  # content key: the store entry, or the input's fingerprint for precomputed embeddings
    origin: Literal["computed", "cache", "input"]
    path: Path | None  # the store entry (None for embeddings given as input)
    ids: tuple[str, ...]
    indices: np.ndarray  # dataset indices of the rows
    labels: np.ndarray
    layers: Mapping[str, np.ndarray]  # layer -> (N, d) float32
    reshapes: Mapping[str, str]  # layer -> the reshape that ran ("given" for precomputed vectors)
    thumbnails: np.ndarray  # (N, t, t, 3) uint8
    bad: tuple[tuple[str, str], ...]  # (sample id, reason) skipped as unreadable
    forward_calls: int = 0
    manifest: Mapping[str, object] = field(default_factory=dict)
    hashes: np.ndarray | None = None  # (N, 16) uint8 content hash of each decoded image (None: no images)


@dataclass(frozen=True, eq=False)
class ModelRun:
    model: ModelInfo
    embeddings: Embeddings


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True, eq=False)
class Finding:
    """Base class of every analysis's result (a frozen dataclass of plain values and arrays)."""


F = TypeVar("F", bound=Finding)


def finding_of(findings: Mapping[str, Finding], name: str, kind: type[F]) -> F:
    """The finding of analysis ``name``, as the class it is (an analysis reads the findings of the
    ones it ``requires``)."""
    f = findings[name]
    if not isinstance(f, kind):
        raise TypeError(f"the {name!r} finding is a {type(f).__name__}, not a {kind.__name__}")
    return f


@dataclass(frozen=True)
class Headline:
    """One finding for the top of the report: a sentence a reviewer can act on, how much it
    matters, and a link to its evidence (a gallery, a table or a map)."""

    id: str  # stable across builds: "<analysis>/<model>/<layer>/<what>"
    severity: str  # high | medium | low | info
    text: str
    evidence: str  # the anchor of the evidence in the report ("#l-effnet--global_pool-audit")
    value: float = 0.0  # the size of the problem, to rank findings of one severity
    rows: tuple[int, ...] = ()  # the samples it is most about (rows of the report's samples), worst first

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "rows"}


@dataclass(frozen=True, eq=False)
class MapResult:
    """A 2-D map as the report shows it (the fitted estimator stays behind in the pipeline)."""

    method: str
    title: str
    coords: np.ndarray  # (N, 2) float32: every sample's position (fitted, or placed - see ``placement``)
    params: Mapping[str, object]
    notes: tuple[str, ...]
    caption: str
    fitted_rows: np.ndarray | None = None  # the sample the map was fitted on (None: every sample)
    placement: str = ""  # how the others were placed: "transform" or "nearest fitted samples"
    key: str = ""  # its cache key: what it was computed from (embeddings, graph, PCA, sample) and the code

    @property
    def rows(self) -> np.ndarray:
        """The rows the map was fitted on (all of them when it was not sampled)."""
        return np.arange(len(self.coords)) if self.fitted_rows is None else self.fitted_rows


@dataclass(frozen=True, eq=False)
class Samples:
    """The rows every model of a build describes, in order."""

    ids: tuple[str, ...]
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]
    thumbnails: np.ndarray  # (N, t, t, 3) uint8
    image_stats: np.ndarray  # (N, 4): brightness, contrast, saturation, colour balance
    hashes: np.ndarray | None = None  # (N, 16) uint8 content hash of each image (None: no images)
    #: column -> each sample's value (a CSV manifest's)
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    properties: np.ndarray | None = None  # (N, len(compute.properties.PROPERTIES)) from the decoded images

    def __len__(self) -> int:
        return len(self.ids)


def card_anchor(sample_id: str) -> str:
    """The anchor of a sample's card in the report: the same for one id in every build."""
    return f"s-{slug(sample_id, max_len=60)}"


@dataclass(frozen=True, eq=False)
class SampleFlag:
    """What a finding says of some samples ("likely label error"): their rows, and where in the
    report the finding shows them (an anchor suffix of the analysis's section, e.g. "-labels")."""

    name: str
    rows: np.ndarray
    anchor: str = ""
    finding: bool = True  # a finding about them (False: they only stand in a gallery, e.g. a component's end)


@dataclass(frozen=True, eq=False)
class SampleValues:
    """A value a finding gives every sample, worth showing on its card: a number ("label support"),
    a class (``kind="class"``: "kNN prediction") or a slice (``kind="slice"``, 0: none)."""

    name: str
    values: np.ndarray  # (N,)
    kind: Literal["number", "class", "slice"] = "number"
    per_layer: bool = False  # a column of the card's table of layers (every layer has it); else in its head


@dataclass(frozen=True, eq=False)
class SampleSet:
    """A set of samples the report puts into words (a component's end, a slice, the samples whose
    neighbourhood changed most): the describers test what sets it apart from the other samples."""

    key: str  # stable across builds: "extremes/effnet/global_pool/pc2-high"
    title: str  # "PC2's high end"
    rows: np.ndarray  # rows of the report's samples (of a compared dataset when ``dataset`` is set)
    anchor: str = ""  # where the report shows it (an anchor suffix of the analysis's section until resolved)
    model: str = ""  # whose classifier head may name it ("": the analysis's model)
    dataset: str = ""  # a compared dataset: ``rows`` are its samples, the rest are the reference's
    finding: bool = False  # a non-label name that explains it strongly becomes a finding (ends, weak slices)


@dataclass(frozen=True)
class Name:
    """One description of a set: what it is (``text``), how well it separates the set from the rest
    (AUROC), for a yes/no description the share with it in the set and in the rest, and the odds
    that it is chance (the p-value, and the Benjamini-Hochberg q-value over the whole report)."""

    describer: str  # metadata | head | image
    text: str  # "source = B", "darker", "looks like: sandal"
    auroc: float  # of the description's feature for the set against the rest (1: all the set above)
    p: float
    q: float
    share: float | None = None  # yes/no descriptions: share of the set with it
    overall: float | None = None  # ... and of the rest
    column: str = ""  # the metadata column or image property it reads (not the label)
    also: tuple[str, ...] = ()  # the head's other classes the set is taken for ("cowboy boot", "Loafer")

    @property
    def strength(self) -> float:
        return abs(self.auroc - 0.5) * 2

    def phrase(self) -> str:
        """ "source = B (81 %, 33 % of the rest)", "darker (AUROC 0.91)"."""
        if self.share is not None and self.overall is not None:
            also = f"; also {', '.join(self.also)}" if self.also else ""
            return f"{self.text} ({100 * self.share:.0f} %, {100 * self.overall:.0f} % of the rest{also})"
        return f"{self.text} than the rest (AUROC {max(self.auroc, 1 - self.auroc):.2f})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "describer": self.describer,
            "text": self.text,
            "auroc": round(self.auroc, 4),
            "p": float(f"{self.p:.3g}"),
            "q": float(f"{self.q:.3g}"),
            "share": None if self.share is None else round(self.share, 4),
            "overall": None if self.overall is None else round(self.overall, 4),
        }


@dataclass(frozen=True)
class Description:
    """What a set of samples shares, in words: its best names (at most three), or none."""

    key: str
    title: str
    where: str  # "effnet · global_pool", or the datasets compared
    anchor: str
    size: int
    names: tuple[Name, ...]
    tested: int  # candidates tested for this set

    def phrases(self) -> list[str]:
        """The names as a reviewer would write them: the image properties in one phrase ("darker,
        lower-contrast and blurrier than the rest (AUROC 0.98, 0.96, 0.87)"), the others one each."""
        looks = [n for n in self.names if n.describer == "image" and n.share is None]
        out = []
        for n in self.names:
            if n not in looks:
                out.append(n.phrase())
            elif n is looks[0]:  # the properties together, where the strongest of them stands
                words = [m.text for m in looks]
                said = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
                aurocs = ", ".join(f"{max(m.auroc, 1 - m.auroc):.2f}" for m in looks)
                out.append(f"{said} than the rest (AUROC {aurocs})")
        return out

    def words(self) -> str:
        return "; ".join(self.phrases())

    def as_dict(self) -> dict[str, Any]:
        return {
            "set": self.key,
            "title": self.title,
            "where": self.where,
            "size": self.size,
            "tested": self.tested,
            "names": [n.as_dict() for n in self.names],
        }


@dataclass(frozen=True, eq=False)
class LayerResult:
    model: str
    layer: str
    reshape: str
    dim: int
    n: int
    nonfinite_rows: int
    notes: tuple[str, ...]
    maps: Mapping[str, MapResult]
    findings: Mapping[str, Finding]  # analysis name -> its finding, in the registry's order
    metrics: Mapping[str, MetricValue]  # every analysis's metrics (summary.json and checks)
    summary: Mapping[str, Any] = field(default_factory=dict)  # every analysis's part of the layer's summary.json entry
    neighbours: np.ndarray | None = None  # (N, m) each sample's nearest samples in this layer (rows), nearest first
    flags: tuple[SampleFlag, ...] = ()  # what the findings say of samples (anchors resolved)
    values: tuple[SampleValues, ...] = ()  # per-sample values the findings give
    sets: tuple[SampleSet, ...] = ()  # sets of samples to put into words (anchors resolved)

    @property
    def slug(self) -> str:
        return f"{slug(self.model)}--{slug(self.layer)}"

    def __getitem__(self, analysis: str) -> Finding:
        return self.findings[analysis]


@dataclass(frozen=True, eq=False)
class ModelResult:
    model: ModelInfo
    embeddings_key: str
    origin: Literal["computed", "cache", "input"]
    forward_calls: int
    layers: tuple[LayerResult, ...]

    def layer(self, name: str) -> LayerResult:
        return next(l for l in self.layers if l.layer == name)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str
    fingerprint: str
    class_names: tuple[str, ...]
    selection: str  # all / first / random / stratified
    used_per_class: Mapping[str, int]
    total_per_class: Mapping[str, int]
    has_images: bool


@dataclass(frozen=True)
class CheckResult:
    name: str
    metric: str
    model: str
    layer: str
    value: float | None
    baseline: float | None
    passed: bool
    message: str
    skipped: bool = False
    evidence: str = ""  # the anchor in report.html of what the metric measures ("#l-effnet--global_pool-audit")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunStats:
    """Run-specific facts (they go to run.json, never to summary.json): time and memory per stage,
    forward passes, fits, and what the caches gave back or had to compute."""

    timings: Mapping[str, float]
    peak_rss_mb: Mapping[str, float]
    forward_calls: int
    reducer_fits: int
    computed: Mapping[str, int]  # cache kind -> entries computed this run
    reused: Mapping[str, int]  # cache kind -> entries read back


@dataclass(frozen=True)
class HtmlStats:
    """What render measured: sizes (section by section) and the size-budget steps it took, and which
    figure files it drew and which it read back from the cache."""

    html_bytes: int
    section_bytes: Mapping[str, int]
    reductions: tuple[str, ...]
    over_budget: bool
    figures_drawn: tuple[str, ...] = ()
    figures_reused: tuple[str, ...] = ()
    cards: Mapping[str, str] = field(default_factory=dict)  # sample id -> the anchor of its card in the report
