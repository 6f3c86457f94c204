"""``ReportSpec``: a whole report, put together from the registered dataset kinds and reducers
(each validated against its own parameter model, keeping its library's parameter names) and the
options no registry shapes (``reportgen.options``)."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..datasets import DATASET_KINDS, DatasetParams, is_precomputed
from ..options import PIXELS_MODEL, CheckSpec, ExecutionSpec, ModelSpec, OutputSpec, ReportOptions
from ..params import Params, ResolvedPath
from ..reducers import REDUCERS, PcaParams, ReducerParams
from .source import SpecSource


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


def _dataset(value: Any, _handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    return (
        _tagged(value, {k: v.params for k, v in DATASET_KINDS.items()}, "kind", DatasetParams, info.context)
        if not isinstance(value, DatasetParams)
        else value
    )


def _reducer(value: Any, _handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    return (
        _tagged(value, {k: v.Params for k, v in REDUCERS.items()}, "method", ReducerParams, info.context)
        if not isinstance(value, ReducerParams)
        else value
    )


#: A dataset entry: validated against the registered kind's parameter model (``datasets.DATASET_KINDS``).
DatasetSpec = Annotated[SerializeAsAny[DatasetParams], WrapValidator(_dataset)]
#: A reducer entry: validated against the registered reducer's parameter model (``reducers.REDUCERS``).
ReducerSpec = Annotated[SerializeAsAny[ReducerParams], WrapValidator(_reducer)]


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


class ReportSpec(Params):
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
    )
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
        if self.extra_datasets and any(is_precomputed(d) != precomputed for d in self.extra_datasets):
            raise ValueError(
                "datasets: compare precomputed embeddings with precomputed embeddings (the same layers, from the same "
                "model), or images with images through the models; not one with the other"
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
        return next(r for r in self.reducers if isinstance(r, PcaParams))

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
