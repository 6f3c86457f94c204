"""``reportgen.spec``: the spec's short, stable import path (``from reportgen.spec import load_spec``).

The stage itself is the package ``reportgen.specification`` (its YAML source, its messages, the
``ReportSpec`` that the registries shape); this module only hands its public names on.
"""

from __future__ import annotations

from .specification import (
    PIXELS_MODEL,
    CheckSpec,
    DatasetSpec,
    ExecutionSpec,
    LayerSpec,
    ModelSpec,
    OutputSpec,
    ReducerSpec,
    ReportOptions,
    ReportSpec,
    SpecSource,
    apply_overrides,
    format_loc,
    load_spec,
    loads_spec,
    parse_yaml,
    validate_data,
)

__all__ = [
    "ReportSpec",
    "ModelSpec",
    "LayerSpec",
    "ReportOptions",
    "CheckSpec",
    "OutputSpec",
    "ExecutionSpec",
    "DatasetSpec",
    "ReducerSpec",
    "SpecSource",
    "PIXELS_MODEL",
    "load_spec",
    "loads_spec",
    "validate_data",
    "parse_yaml",
    "apply_overrides",
    "format_loc",
]
