"""The base of every parameter model in a spec: strict (unknown keys rejected) and frozen.

A leaf module, so that the spec, the dataset kinds, the reducers and the analyses can all
declare their parameters without importing one another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    todo: list[type] = [cls]
    while todo:
        sub: type
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.append(sub)
                todo.append(sub)
    return out


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths resolve against the spec's folder (the validation context's ``base_dir``)."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = Path(value).expanduser()
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


#: A path in a spec: relative ones resolve against the spec file's folder.
ResolvedPath = Annotated[Path, AfterValidator(_resolve)]
