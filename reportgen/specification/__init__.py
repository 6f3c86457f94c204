"""Spec: YAML text -> a validated, frozen ``ReportSpec``.

    spec = load_spec("spec.yaml", overrides=["dataset.limit=500"])

Reducers keep each library's own parameter names. Relative paths resolve against the spec's
folder. Errors carry the YAML path and line (``reducers[1].tsne.perplexity: must be > 0, got -5
(line 7)``). The spec knows the registered dataset kinds and reducers (its unions are made from
them) but not the analyses: names that only the analyses know (a check's metric) are checked when
a build starts and by ``reportgen validate`` (``reportgen.catalog``), as scikit-learn validates in
``fit``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import SpecError
from ..options import (
    PIXELS_MODEL,
    CheckSpec,
    ExecutionSpec,
    LayerSpec,
    ModelSpec,
    OutputSpec,
    ReportOptions,
)
from .messages import validate_data
from .report import DatasetSpec, ReducerSpec, ReportSpec
from .source import SpecSource, apply_overrides, format_loc, parse_yaml

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
    given = SpecSource(
        path=source, text=text, overrides=tuple(overrides or ()), effective=effective, positions=positions
    )
    return spec.with_source(given)
