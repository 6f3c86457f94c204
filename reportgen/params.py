"""The base of every parameter model in a spec: strict (unknown keys rejected) and frozen.

A leaf module, so that the spec, the dataset kinds, the reducers and the analyses can all
declare their parameters without importing one another.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def all_subclasses(cls: type) -> list[type]:
    out, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.append(sub)
                todo.append(sub)
    return out
