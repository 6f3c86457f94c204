"""Spec: YAML text -> a validated, frozen ``ReportSpec``.

Reducers keep each library's own parameter names. Relative paths resolve against the
spec's folder. Errors carry the YAML path and line (``reducers[1].tsne.perplexity:
must be > 0, got -5 (line 7)``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import analyses
from .datasets import DATASET_KINDS, DatasetParams, is_precomputed
from .datasets.base import ResolvedPath
from .errors import SpecError
from .params import Params, all_subclasses
from .reducers import REDUCERS, PcaParams, ReducerParams

#: Upper bound on YAML nodes after alias expansion ("billion laughs" guard).
MAX_YAML_NODES = 100_000
#: Upper bound on spec file size.
MAX_SPEC_BYTES = 1_000_000

_Model = Params


def _tagged(value: Any, table: dict, key: str, base: type[BaseModel], context: Any) -> Any:
    """Validate a ``{key: name, ...}`` entry with the parameter model registered under ``name``."""
    if isinstance(value, base):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("model_type", "must be a mapping, got {kind}", {"kind": type(value).__name__})
    tag = value.get(key)
    if tag is None or not isinstance(tag, str):
        raise PydanticCustomError(
            "union_tag_not_found",
            "needs a {discriminator} key",
            {"discriminator": repr(key), "expected_tags": ", ".join(table)},
        )
    if tag not in table:
        raise PydanticCustomError(
            "union_tag_invalid",
            "unknown kind {tag}",
            {"discriminator": repr(key), "tag": str(tag), "expected_tags": ", ".join(repr(t) for t in table)},
        )
    return table[tag].model_validate(value, context=context)


def _dataset(value: Any, _handler: ValidatorFunctionWrapHandler, info) -> Any:
    return (
        _tagged(value, {k: v.params for k, v in DATASET_KINDS.items()}, "kind", DatasetParams, info.context)
        if not isinstance(value, DatasetParams)
        else value
    )


def _reducer(value: Any, _handler: ValidatorFunctionWrapHandler, info) -> Any:
    return (
        _tagged(value, {k: v.Params for k, v in REDUCERS.items()}, "method", ReducerParams, info.context)
        if not isinstance(value, ReducerParams)
        else value
    )


#: A dataset entry: validated against the registered kind's parameter model (``datasets.DATASET_KINDS``).
DatasetSpec = Annotated[SerializeAsAny[DatasetParams], WrapValidator(_dataset)]
#: A reducer entry: validated against the registered reducer's parameter model (``reducers.REDUCERS``).
ReducerSpec = Annotated[SerializeAsAny[ReducerParams], WrapValidator(_reducer)]


def dataset_kinds() -> tuple[str, ...]:
    return tuple(DATASET_KINDS)


def reducer_names() -> tuple[str, ...]:
    return tuple(REDUCERS)


# ----------------------------------------------------------------------------- models

Reshape = Literal["auto", "mean", "max", "flatten", "avg_pool_1", "avg_pool_2", "avg_pool_3", "cls", "token_mean"]


class LayerSpec(_Model):
    name: str | int = Field(description="Module name in named_modules(), or its index there.")
    reshape: Reshape = "auto"


def _layer(value: Any) -> Any:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return {"name": value}
    return value


class ModelSpec(_Model):
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
        description="Resizing on the CPU: pillow (the GPU reproduces it byte for byte) or opencv (pip install 'reportgen[opencv]'; "
        "much faster per image, pixels within a few grey levels of Pillow's, its own cache key; images are then resized on the CPU on any device).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(64, gt=0, le=65536)
    num_workers: int | None = Field(None, ge=0, description="Decode workers; default: chosen from the dataset size.")
    channels_last: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Forward-pass precision; bf16/fp16 only on a GPU (the report states the measured agreement with fp32).",
    )
    jit: bool | Literal["auto"] = Field(
        "auto",
        description="Freeze the graph with TorchScript (auto: on CPU from 1,024 images); checked against eager, falls back.",
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


# ----------------------------------------------------------------------------- reducers


def _reducer_short_form(value: Any) -> Any:
    """``pca`` / ``{pca: {...}}`` -> ``{"method": "pca", ...}``."""
    if isinstance(value, str):
        return {"method": value}
    if isinstance(value, dict) and len(value) == 1 and "method" not in value:
        ((key, params),) = value.items()
        if params is None:
            params = {}
        if isinstance(params, dict):
            return {"method": key, **params}
    return value


# ----------------------------------------------------------------------------- report options


class ReportOptions(_Model):
    gallery_size: int = Field(8, gt=0, le=64, description="Samples at each end of a component.")
    gallery_components: int = Field(10, gt=0, le=64, description="Components that get an extremity gallery.")
    thumbnail_px: int = Field(32, ge=8, le=128, description="Stored thumbnail size in pixels.")
    mosaic_cap: int = Field(2000, gt=0, description="At most this many thumbnails in an image mosaic.")
    grid_cap: int = Field(400, gt=3, description="At most this many cells in a grid mosaic.")
    neighbours: int = Field(8, gt=0, le=50, description="Neighbours shown per query sample.")
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
        description="The layer's neighbour graph: exact, or approximate (faiss HNSW, recall measured); auto: exact up to approximate_above samples.",
    )
    approximate_above: int = Field(
        20_000, gt=10, description="With neighbour_index auto: samples above which the graph is approximate."
    )
    map_cap: int = Field(
        100_000,
        gt=10,
        description="t-SNE, UMAP (any reducer but PCA) are fitted on at most this many samples, a seeded stratified sample; the report says so.",
    )
    place_all: bool = Field(
        False,
        description="Above map_cap, place the other samples with the fitted map's transform (slower); else at their nearest fitted samples, for the density layer.",
    )
    audit: bool = Field(
        True,
        description="Data audit on one layer per model: likely label errors, exact and near duplicates, outliers (and leakage across datasets).",
    )
    audit_layer: str | None = Field(
        None, description="The layer the audit and the slices run on (default: the deepest)."
    )
    slices: bool = Field(
        True, description="Slices: clusters of the audit layer ranked by how badly the representation handles them."
    )
    templates: ResolvedPath | None = Field(
        None,
        description="A folder of templates that override the built-in ones by file name (branding, an extra section); same autoescape and Content-Security-Policy.",
    )


def check_metrics() -> tuple[str, ...]:
    """Every metric a check can name: each registered analysis's metrics (maps: one per reducer)."""
    return analyses.check_metric_names()


def _known_metric(value: str) -> str:
    names = check_metrics()
    if value not in names:
        hint = difflib.get_close_matches(str(value), names, n=1)
        raise PydanticCustomError(
            "literal_error",
            "unknown metric",
            {
                "expected": ", ".join(repr(n) for n in names)
                if not hint
                else f"one of the metrics (did you mean {hint[0]!r}?)"
            },
        )
    return value


class CheckSpec(_Model):
    """A quality gate: a metric of one layer (or of every layer) against a bound or a baseline."""

    metric: str = Field(description="A metric of summary.json (see reportgen.spec.check_metrics()).")
    model: str | None = Field(None, description="Model name (default: every model).")
    layer: str | None = Field(None, description="Layer name (default: every layer).")
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(None, ge=0, description="Largest allowed fall below the baseline's value.")
    baseline: ResolvedPath | None = Field(None, description="summary.json of the reference build (for max_drop).")
    name: str | None = None

    @field_validator("metric")
    @classmethod
    def _metric_known(cls, value: str) -> str:
        return _known_metric(value)

    @model_validator(mode="after")
    def _bound(self) -> CheckSpec:
        if self.min is None and self.max is None and self.max_drop is None:
            raise ValueError("give at least one of min, max, max_drop")
        return self


class OutputSpec(_Model):
    dir: ResolvedPath = Path("report")
    max_html_mb: float = Field(10.0, gt=0)
    figures: bool = True


class ExecutionSpec(_Model):
    """Where extraction runs: in this process (``local``) or on a Ray cluster (``ray``)."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None,
        description="Ray cluster address (auto, ray://head:10001, head:6379); unset: start a local cluster for the job.",
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


class ReportSpec(_Model):
    """A whole report: what to load, what to extract, how to reduce and what to show."""

    title: str = "reportgen report"
    description: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    dataset: DatasetSpec
    models: list[ModelSpec] = Field(
        default_factory=list, description="At least one, except for precomputed embeddings."
    )
    reducers: list[ReducerSpec] = Field(default_factory=lambda: [PcaParams()])  # type: ignore[arg-type]
    report: ReportOptions = ReportOptions()
    output: OutputSpec = OutputSpec()
    cache_dir: ResolvedPath | None = Field(None, description="Embedding cache (default: ~/.cache/reportgen).")
    checks: list[CheckSpec] = Field(
        default_factory=list, description="Quality gates; a failure exits 3 (the report is still written)."
    )
    fit_on: str | None = Field(
        None,
        description="With several models: the reference whose fitted reducers place the others (default: the first).",
    )
    extra_datasets: list[DatasetSpec] = Field(
        default_factory=list, description="Set through `datasets:` (the first is the reference); compared against it."
    )  # type: ignore[valid-type]
    execution: ExecutionSpec = ExecutionSpec()

    @model_validator(mode="before")
    @classmethod
    def _datasets_and_none(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("models") in ("none", "None", "pixels") or data.get("model") in ("none", "pixels"):
                data.pop("model", None)
                data["models"] = [PIXELS_MODEL]
            if "datasets" in data:
                ds = data.pop("datasets")
                if "dataset" in data:
                    raise ValueError("give either 'dataset' or 'datasets', not both")
                if not isinstance(ds, list) or not ds:
                    raise ValueError("datasets: must be a non-empty list of datasets (the first is the reference)")
                data["dataset"], data["extra_datasets"] = ds[0], ds[1:]
        return data

    @field_validator("reducers", mode="before")
    @classmethod
    def _reducers_short(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_reducer_short_form(v) for v in value]
        return value

    @field_validator("reducers")
    @classmethod
    def _reducers_unique(cls, value: list[Any]) -> list[Any]:
        methods = [r.method for r in value]
        for m in methods:
            if methods.count(m) > 1:
                raise ValueError(f"reducer {m!r} is listed twice; list each reducer once")
        if "pca" not in methods:
            value = [PcaParams(), *value]
        return value

    @field_validator("models")
    @classmethod
    def _models_unique(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in value]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"duplicate model name {n!r}; give each model its own name")
        return value

    @model_validator(mode="after")
    def _models_needed(self) -> ReportSpec:
        precomputed = is_precomputed(self.dataset)
        if not self.models and not precomputed:
            raise ValueError("models: must have at least 1 item (or use a dataset of kind embeddings)")
        if self.extra_datasets and (precomputed or any(is_precomputed(d) for d in self.extra_datasets)):
            raise ValueError(
                "datasets: comparing datasets runs a model over each; precomputed embeddings cannot be compared this way"
            )
        if self.models and precomputed:
            raise ValueError(f"models: a dataset of kind {self.dataset.kind} holds embeddings already; remove models")
        return self

    @model_validator(mode="after")
    def _fit_on_known(self) -> ReportSpec:
        if self.fit_on is not None and self.fit_on not in [m.name for m in self.models]:
            raise ValueError(f"fit_on: {self.fit_on!r} is not a model name ({', '.join(m.name for m in self.models)})")
        return self

    _source: SpecSource | None = PrivateAttr(default=None)

    @property
    def reference(self) -> str:
        return self.fit_on or (self.models[0].name if self.models else "embeddings")

    @property
    def pca(self) -> PcaParams:
        return next(r for r in self.reducers if r.method == "pca")

    @property
    def source(self) -> SpecSource:
        """Where the spec came from: its text, the ``--set`` overrides and the effective YAML."""
        if self._source is None:
            data = self.model_dump(mode="json", exclude_defaults=True)
            return SpecSource(
                path=None, text=yaml.safe_dump(data, sort_keys=False, allow_unicode=True), overrides=(), effective=None
            )
        return self._source

    def with_source(self, source: SpecSource) -> ReportSpec:
        """A copy that remembers its source (``load_spec`` sets it; ``build`` shows it in the report)."""
        out = self.model_copy()
        out._source = source
        return out


@dataclass(frozen=True)
class SpecSource:
    """The text a spec was read from and the overrides applied to it."""

    path: str | None
    text: str
    overrides: tuple[str, ...]
    effective: str | None  # the YAML after the overrides (None without overrides)

    @property
    def shown(self) -> str:
        """What the report shows as the spec that was built."""
        return self.effective if self.effective is not None else self.text


# ----------------------------------------------------------------------------- loading


class _Positions:
    """YAML path -> line number, from the composed node tree."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.lines: dict[tuple, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                self.lines.setdefault(path + (key,), k.start_mark.line + 1)
                self._walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _count_nodes(node: yaml.Node) -> int:
    """Nodes after alias expansion, memoised so the count itself cannot blow up."""
    memo: dict[int, int] = {}

    def count(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = 1  # cycle guard
        total = 1
        if isinstance(n, yaml.MappingNode):
            total += sum(count(k) + count(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(count(v) for v in n.value)
        memo[key] = min(total, MAX_YAML_NODES * 10)
        return memo[key]

    return count(node)


def parse_yaml(text: str, *, source: str = "spec") -> tuple[Any, _Positions]:
    """Safe-load YAML, refusing alias bombs; errors name the line."""
    if len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: file is larger than {MAX_SPEC_BYTES // 1000} kB; is this really a spec?")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    if node is not None and _count_nodes(node) > MAX_YAML_NODES:
        raise SpecError(
            f"{source}: YAML expands to more than {MAX_YAML_NODES:,} nodes through aliases; refusing (alias bomb?)"
        )
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader does not construct ('=', !!python/...)
        raise _yaml_error(exc, source) from None
    return data, _Positions(node)


def _yaml_error(exc: Exception, source: str) -> SpecError:
    """PyYAML's error as one line: where (line, column) and what, without its excerpt of the text."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return SpecError(f"{source}: malformed YAML{where}: {' '.join(str(problem).split())}")


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            not str(part)
            or not str(part).isprintable()
            or str(part) != str(part).strip()
            or any(c in str(part) for c in ".[]")
        ):
            out += (
                f"[{str(part)!r}]"  # a key that would not read as one (empty, a line break, a dot): quoted, on one line
            )
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _all_fields() -> set[str]:
    """Every field name of every parameter model (registered plug-ins included), for "did you mean"."""
    out: set[str] = set()
    for cls in all_subclasses(Params):
        out.update(cls.model_fields)
    return out


def _message(err: dict) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, (dict, list)) else type(value).__name__
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}, got {shown}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g}, got {shown}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']:g}, got {shown}"
    if kind == "extra_forbidden":
        key = err["loc"][-1] if err["loc"] else "?"
        hint = difflib.get_close_matches(str(key), sorted(_all_fields()), n=1)
        return "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else "; remove it")
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return (
            f"must be {ctx.get('expected')}, got {shown}"
            if str(ctx.get("expected", "")).startswith("one of")
            else f"must be one of {ctx.get('expected')}, got {shown}"
        )
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "kind")).strip("'")
        tags = ctx.get("expected_tags") or (", ".join(dataset_kinds()) if disc == "kind" else None)
        return f"needs a '{disc}' key" + (f"; expected one of {tags}" if tags else "")
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_pattern_mismatch":
        return (
            f"{shown} is not allowed here (letters, digits, '_', '.', '-' only)"
            if "A-Za-z0-9" in ctx.get("pattern", "")
            else f"{shown} must look like package.module:function"
        )
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {shown}"


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union/function tags that are not YAML keys."""
    out = []
    for part in loc:
        if isinstance(part, str) and (part.startswith("function-") or part in ("list[...]",)):
            continue
        if (
            isinstance(part, str) and "[" in part[1:] and part.endswith("]")
        ):  # a tag such as "tagged-union[...]", not a key "[0]"
            continue
        out.append(part)
    return tuple(out)


def _yaml_loc(loc: tuple, data: Any) -> tuple:
    """Map a validated loc back onto the YAML structure: a short-form reducer ``{tsne: {...}}``
    has its method as a YAML key (reducers[1].tsne.perplexity)."""
    if len(loc) >= 3 and loc[0] == "reducers" and isinstance(loc[1], int):
        raw = data.get("reducers") if isinstance(data, dict) else None
        if (
            isinstance(raw, list)
            and loc[1] < len(raw)
            and isinstance(raw[loc[1]], dict)
            and "method" not in raw[loc[1]]
            and len(raw[loc[1]]) == 1
        ):
            return loc[:2] + (next(iter(raw[loc[1]])),) + loc[2:]
    return loc


def validate_data(
    data: Any, *, base_dir: Path | None = None, positions: _Positions | None = None, source: str = "spec"
) -> ReportSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping (key: value), got {type(data).__name__}")
    try:
        return ReportSpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            yloc = _yaml_loc(loc, data)
            line = positions.line(yloc) if positions else None
            where = f" (line {line})" if line else ""
            lines.append(f"{format_loc(yloc)}: {_message({**err, 'loc': loc})}{where}")
        first = lines[0] + (f" (and {len(lines) - 1} more; run 'reportgen validate')" if len(lines) > 1 else "")
        raise SpecError(f"{source}: {first}", errors=[f"{source}: {l}" for l in lines]) from None


def apply_overrides(data: Any, overrides: list[str]) -> Any:
    """``a.b=value`` / ``models[0].input_size=128`` -> set in the raw mapping (value parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set dataset.limit=500")
        key, _, raw = item.partition("=")
        parts = [p for p in re.split(r"\.|\[(\d+)\]", key.strip()) if p]
        if not parts:
            raise SpecError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            index: Any = int(part) if part.isdigit() else part
            if isinstance(node, list):
                if not isinstance(index, int) or index >= len(node):
                    raise SpecError(f"--set {item!r}: {format_loc(tuple(parts[:i]))} has no item {part}")
            elif isinstance(node, dict):
                if not last and index not in node:
                    node[index] = {}
            else:
                raise SpecError(f"--set {item!r}: {format_loc(tuple(parts[:i]))} is not a mapping or list")
            if last:
                node[index] = value
            else:
                node = node[index]
    return data


def load_spec(path: str | os.PathLike, *, overrides: list[str] | None = None) -> ReportSpec:
    """Read, parse and validate a spec file. Raises ``SpecError`` with every problem found."""
    path = Path(os.fspath(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found; check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; give the path of a .yaml spec") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text; a spec is a YAML file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror})") from None
    return loads_spec(text, base_dir=path.resolve().parent, overrides=overrides, source=str(path))


def loads_spec(
    text: str, *, base_dir: str | os.PathLike | None = None, overrides: list[str] | None = None, source: str = "spec"
) -> ReportSpec:
    """Parse and validate spec text; ``overrides`` (``KEY=VALUE``, as ``--set``) are applied first and
    remembered, so the report shows the spec that was built."""
    data, positions = parse_yaml(text, source=source)
    effective = None
    if overrides:
        if data is None:
            data = {}
        data = apply_overrides(data, list(overrides))
        effective = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    spec = validate_data(
        data, base_dir=Path(os.fspath(base_dir)) if base_dir is not None else None, positions=positions, source=source
    )
    return spec.with_source(SpecSource(path=source, text=text, overrides=tuple(overrides or ()), effective=effective))


def json_schema() -> dict:
    """JSON Schema of the spec, with the dataset kinds, reducers and check metrics registered now."""
    from typing import Union

    from pydantic import create_model

    def union(models: list[type], key: str):
        return models[0] if len(models) == 1 else Annotated[Union[tuple(models)], Field(discriminator=key)]  # noqa: UP007

    ds = union([k.params for k in DATASET_KINDS.values()], "kind")
    rd = union([r.Params for r in REDUCERS.values()], "method")
    check = create_model(
        "CheckSpec",
        __base__=CheckSpec,
        metric=(Literal[check_metrics()], Field(description=CheckSpec.model_fields["metric"].description)),
    )  # type: ignore[valid-type]
    schema_model = create_model(
        "ReportSpec",
        __base__=ReportSpec,
        dataset=(ds, ...),
        extra_datasets=(
            list[ds],
            Field(default_factory=list, description=ReportSpec.model_fields["extra_datasets"].description),
        ),  # type: ignore[valid-type]
        reducers=(list[rd], Field(default_factory=lambda: [PcaParams()])),  # type: ignore[valid-type]
        checks=(list[check], Field(default_factory=list, description=ReportSpec.model_fields["checks"].description)),  # type: ignore[valid-type]
    )
    return schema_model.model_json_schema()
