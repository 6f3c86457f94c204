"""The spec's parameter models that no plug-in registry shapes: a model and its layers, the report's
options, checks, output and execution.

A leaf below the spec, the reducers, the engines and the analyses: each of them reads these
options with their real types, and none of them needs the spec (``reportgen.specification``), which puts
the registered dataset kinds and reducers together into one ``ReportSpec``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .params import Params, ResolvedPath

Reshape = Literal["auto", "mean", "max", "flatten", "avg_pool_1", "avg_pool_2", "avg_pool_3", "cls", "token_mean"]


class LayerSpec(Params):
    name: str | int = Field(description="Module name in named_modules(), or its index there.")
    reshape: Reshape = "auto"


def _layer(value: Any) -> Any:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return {"name": value}
    return value


class ModelSpec(Params):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    timm: str | None = Field(None, description="timm architecture name.")
    factory: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="package.module:function returning a torch.nn.Module.",
    )
    pixels: bool = Field(False, description="No model: analyse the resized raw pixels (layer 'pixels').")
    weights: Literal["efficientnet_lite0"] | None = Field(
        None, description="Packaged weights (see reportgen.models.PACKAGED_WEIGHTS)."
    )
    pretrained: bool = False
    checkpoint: ResolvedPath | None = None
    num_classes: int | None = Field(None, ge=0)
    in_chans: int | None = Field(None, gt=0)
    input_size: int | None = Field(None, gt=0, le=4096)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = Field(
        None, gt=0, le=1, description="Centre-crop fraction (timm's crop_pct); 1.0 keeps the whole image."
    )
    resizer: Literal["pillow", "opencv"] = Field(
        "pillow",
        description=(
            "Resizing on the CPU: pillow (the GPU reproduces it byte for byte) or opencv (pip install "
            "'reportgen[opencv]'; "
            "much faster per image, pixels within a few grey levels of Pillow's, its own cache key; images are then "
            "resized on the CPU on any device)."
        ),
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(64, gt=0, le=65536)
    num_workers: int | None = Field(None, ge=0, description="Decode workers; default: chosen from the dataset size.")
    channels_last: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description=(
            "Forward-pass precision; bf16/fp16 only on a GPU (the report states the measured agreement with fp32)."
        ),
    )
    jit: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Freeze the graph with TorchScript (auto: on CPU from 1,024 images); checked against eager, falls back."
        ),
    )
    max_features: int = Field(16_384, gt=0, description="Refuse layers whose reshaped output is larger.")
    layers: list[LayerSpec] = Field(min_length=1)

    @field_validator("layers", mode="before")
    @classmethod
    def _layers_short_form(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_layer(v) for v in value]
        return value

    @field_validator("layers")
    @classmethod
    def _unique_layers(cls, value: list[LayerSpec]) -> list[LayerSpec]:
        names = [str(v.name) for v in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate layer {dupes[0]!r}; list each layer once")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if sum(x is not None and x is not False for x in (self.timm, self.factory, self.pixels or None)) != 1:
            raise ValueError(
                "give exactly one of 'timm' (an architecture name), 'factory' (module:function) or 'pixels: true'"
            )
        sources = [k for k in ("weights", "checkpoint") if getattr(self, k) is not None] + (
            ["pretrained"] if self.pretrained else []
        )
        if len(sources) > 1:
            raise ValueError(f"give at most one of weights, checkpoint, pretrained; got {', '.join(sources)}")
        if self.weights is not None and self.factory is not None:
            raise ValueError(
                "'weights' names packaged weights for a timm architecture; use 'checkpoint' with a factory"
            )
        return self


class DescribeOptions(Params):
    """Words for what a set of samples shares (a component's end, a slice): which describers run,
    which metadata columns they read, and how strong and how sure a name must be."""

    describers: list[str] = Field(
        default_factory=lambda: ["metadata", "head", "image"],
        description="Describers to run (metadata, head, image); an empty list turns naming off.",
    )
    columns: list[str] | None = Field(None, description="Metadata columns to use (default: every column).")
    ignore: list[str] = Field(default_factory=list, description="Metadata columns never used (ids, paths, dates).")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="False discovery rate (Benjamini-Hochberg over every set and candidate)."
    )
    min_auroc: float = Field(
        0.7,
        gt=0.5,
        lt=1,
        description="A name must separate its set from the rest at least this well (AUROC, or 1 - AUROC).",
    )
    end_share: float = Field(
        0.05,
        gt=0,
        le=0.5,
        description="A component's end, as a set to name: this share of the samples at each end (at least a gallery).",
    )


class ReportOptions(Params):
    gallery_size: int = Field(8, gt=0, le=64, description="Samples at each end of a component.")
    gallery_components: int = Field(10, gt=0, le=64, description="Components that get an extremity gallery.")
    thumbnail_px: int = Field(32, ge=8, le=128, description="Stored thumbnail size in pixels.")
    mosaic_cap: int = Field(2000, gt=0, description="At most this many thumbnails in an image mosaic.")
    grid_cap: int = Field(400, gt=3, description="At most this many cells in a grid mosaic.")
    neighbours: int = Field(8, gt=0, le=50, description="Neighbours shown per query sample.")
    neighbour_classes: int = Field(
        50,
        gt=0,
        description="At most this many classes get a typical sample in the nearest-neighbours table; with more "
        "classes, the ones whose typical sample's neighbours agree least with its label.",
    )
    knn_k: int = Field(10, gt=0, le=100, description="k for kNN accuracy and hard-sample detection.")
    metric: Literal["cosine", "euclidean"] = "cosine"
    hard_samples: int = Field(12, ge=0, le=200)
    axes: list[tuple[str, str]] = Field(default_factory=list, description="Class pairs for custom centroid axes.")
    trustworthiness_cap: int = Field(
        3000, gt=10, description="Samples used for trustworthiness, continuity and silhouette (O(N^2))."
    )
    linear_probe: bool = Field(
        True, description="Measure linear-probe accuracy (logistic regression, stratified 5-fold)."
    )
    probe_cap: int = Field(5000, gt=10, description="At most this many samples for the linear probe.")
    neighbour_index: Literal["auto", "exact", "approximate"] = Field(
        "auto",
        description=(
            "The layer's neighbour graph: exact, or approximate (faiss HNSW, recall measured); auto: exact up to "
            "approximate_above samples."
        ),
    )
    approximate_above: int = Field(
        20_000, gt=10, description="With neighbour_index auto: samples above which the graph is approximate."
    )
    map_cap: int = Field(
        100_000,
        gt=10,
        description=(
            "t-SNE, UMAP (any reducer but PCA) are fitted on at most this many samples, a seeded stratified sample; "
            "the "
            "report says so."
        ),
    )
    place_all: bool = Field(
        False,
        description=(
            "Above map_cap, place the other samples with the fitted map's transform (slower); else at their nearest "
            "fitted samples, for the density layer."
        ),
    )
    audit: bool = Field(
        True,
        description=(
            "Data audit on one layer per model: likely label errors, exact and near duplicates, outliers (and leakage "
            "across datasets)."
        ),
    )
    mirrored_copies: bool = Field(
        False,
        description=(
            "Near duplicates and leakage: count a horizontally flipped picture as a copy (each pair compared both "
            "ways). Among left-right symmetric images the calibrated threshold may come down with the mirrored "
            "look-alikes; the report states each edit's recall either way."
        ),
    )
    audit_layer: str | None = Field(
        None, description="The layer the audit and the slices run on (default: the deepest)."
    )
    slices: bool = Field(
        True, description="Slices: clusters of the audit layer ranked by how badly the representation handles them."
    )
    describe: DescribeOptions = Field(
        default_factory=DescribeOptions,
        description="Names for component ends, slices and changed sets: metadata, the model's head, image properties.",
    )
    interactive: bool = Field(
        True,
        description=(
            "Interactive maps (hover, zoom, search, colour by finding): a small inline script allowed by its hash. "
            "Off: no script at all; the maps still link their dots to the sample cards."
        ),
    )
    interactive_points: int = Field(
        2500,
        ge=0,
        description=(
            "Samples the interactive maps hold: every flagged sample and every sample with a card, then a "
            "stratified sample of the rest up to this many."
        ),
    )
    linked_points: int = Field(
        400,
        ge=0,
        description="Dots of each map that link to their sample cards with JavaScript off (flagged samples first).",
    )
    templates: ResolvedPath | None = Field(
        None,
        description=(
            "A folder of templates that override the built-in ones by file name (branding, an extra section); same "
            "autoescape and Content-Security-Policy."
        ),
    )


class CheckSpec(Params):
    """A quality gate: a metric of one layer (or of every layer) against a bound or a baseline."""

    metric: str = Field(
        description=(
            "A metric of summary.json (every registered analysis's metrics; checked when the build starts and by "
            "reportgen validate)."
        )
    )
    model: str | None = Field(None, description="Model name (default: every model).")
    layer: str | None = Field(None, description="Layer name (default: every layer).")
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(None, ge=0, description="Largest allowed fall below the baseline's value.")
    baseline: ResolvedPath | None = Field(None, description="summary.json of the reference build (for max_drop).")
    name: str | None = None

    @model_validator(mode="after")
    def _bound(self) -> CheckSpec:
        if self.min is None and self.max is None and self.max_drop is None:
            raise ValueError("give at least one of min, max, max_drop")
        return self


class OutputSpec(Params):
    dir: ResolvedPath = Path("report")
    max_html_mb: float = Field(10.0, gt=0)
    figures: bool = True


class ExecutionSpec(Params):
    """Where extraction runs: in this process (``local``) or on a Ray cluster (``ray``)."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None,
        description=(
            "Ray cluster address (auto, ray://head:10001, head:6379); unset: start a local cluster for the job."
        ),
    )
    workers: int | None = Field(
        None, gt=0, description="Model replicas (Ray actors); default: one per GPU, else one per cpus_per_worker CPUs."
    )
    cpus_per_worker: int = Field(2, gt=0, description="CPUs each replica uses (torch threads and decoding).")
    shard_size: int = Field(
        1024,
        gt=0,
        description="Samples per shard: the unit of work and of durability (a re-run computes missing shards only).",
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a local cluster started for the job (default: every core)."
    )


PIXELS_MODEL = {
    "name": "pixels",
    "pixels": True,
    "input_size": 32,
    "layers": [{"name": "pixels", "reshape": "flatten"}],
    "channels_last": False,
}
