"""Validation errors as a user reads them: one line each, the YAML path, what is wrong and the line
(``reducers[1].tsne.perplexity: must be > 0, got -5 (line 7)``), a "did you mean" for unknown keys."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..datasets import DATASET_KINDS
from ..errors import SpecError
from ..params import Params, all_subclasses
from .report import ReportSpec
from .source import Positions, format_loc


def _all_fields() -> set[str]:
    """Every field name of every parameter model (registered plug-ins included), for "did you mean"."""
    out: set[str] = set()
    for cls in all_subclasses(Params):
        out.update(getattr(cls, "model_fields", {}))
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
        tags = ctx.get("expected_tags") or (", ".join(DATASET_KINDS) if disc == "kind" else None)
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
    data: Any, *, base_dir: Path | None = None, positions: Positions | None = None, source: str = "spec"
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
