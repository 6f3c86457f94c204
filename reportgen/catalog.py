"""What is registered, held against a spec: the names a spec may give that only the registries
know (a check's metric comes from the analyses), checked when a build starts and by
``reportgen validate`` (scikit-learn's "validate in fit"); and the spec's JSON Schema with every
registered dataset kind, reducer and metric in it.

The spec itself (``reportgen.specification``) never imports the analyses; this module stands above both.
"""

from __future__ import annotations

import difflib
import functools
import operator
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from .analyses import check_metric_names
from .datasets import DATASET_KINDS
from .errors import SpecError
from .options import CheckSpec
from .reducers import REDUCERS, PcaParams
from .specification import ReportSpec


def check_metrics() -> tuple[str, ...]:
    """Every metric a check can name: each registered analysis's metrics (maps: one per reducer)."""
    return check_metric_names()


def name_errors(spec: ReportSpec) -> list[str]:
    """Every name in ``spec`` that no registry knows, one line each, with its YAML path and line."""
    names = check_metrics()
    out = []
    for i, c in enumerate(spec.checks):
        if c.metric not in names:
            hint = difflib.get_close_matches(str(c.metric), names, n=1)
            expected = f"did you mean {hint[0]!r}?" if hint else f"expected one of {', '.join(names)}"
            where = spec.source.where(("checks", i, "metric"))
            out.append(f"checks[{i}].metric: unknown metric {c.metric!r}; {expected}{where}")
    return out


def check_names(spec: ReportSpec) -> None:
    """Raise a ``SpecError`` (every problem listed) when the spec names what no registry knows."""
    errors = name_errors(spec)
    if errors:
        source = spec.source.path or "spec"
        more = f" (and {len(errors) - 1} more; run 'reportgen validate')" if len(errors) > 1 else ""
        raise SpecError(f"{source}: {errors[0]}{more}", errors=[f"{source}: {e}" for e in errors])


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec, with the dataset kinds, reducers and check metrics registered now."""

    def union(models: list[Any], key: str) -> Any:
        return (
            models[0]
            if len(models) == 1
            else Annotated[functools.reduce(operator.or_, models), Field(discriminator=key)]
        )

    ds: Any = union([k.params for k in DATASET_KINDS.values()], "kind")
    rd: Any = union([r.Params for r in REDUCERS.values()], "method")
    described = CheckSpec.model_fields["metric"].description
    metric: Any = Literal[check_metrics()]
    check: Any = create_model("CheckSpec", __base__=CheckSpec, metric=(metric, Field(description=described)))
    fields = ReportSpec.model_fields
    schema_model = create_model(
        "ReportSpec",
        __base__=ReportSpec,
        dataset=(ds, ...),
        extra_datasets=(list[ds], Field(default_factory=list, description=fields["extra_datasets"].description)),
        reducers=(list[rd], Field(default_factory=lambda: [PcaParams()])),
        checks=(list[check], Field(default_factory=list, description=fields["checks"].description)),
    )
    return schema_model.model_json_schema()
