"""Metadata: every column of a CSV manifest or a projector's metadata (camera, site, scanner,
source, date). A column whose values are all numbers is numeric ("higher age"); any other is
categorical ("source = B"). A column with a distinct value per sample (an id, a path) says nothing
about a set and is left out."""

from __future__ import annotations

import numpy as np

from .base import Column, Describer, DescribeSource

#: A categorical column with more distinct values than this share of the samples is an identifier.
ID_LIKE = 0.5


def _numeric(values: list[str]) -> np.ndarray | None:
    out = np.full(len(values), np.nan)
    seen = 0
    for i, v in enumerate(values):
        if v is None or str(v).strip() == "":
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
        seen += 1
    return out if seen >= 2 else None


class MetadataDescriber(Describer):
    name = "metadata"
    title = "metadata"

    def columns(self, source: DescribeSource, model: str | None) -> list[Column]:
        opts = source.options
        meta = source.dataset.metadata
        wanted = list(meta) if opts.columns is None else [c for c in opts.columns if c in meta]
        out = []
        for name in wanted:
            if name in opts.ignore:
                continue
            raw = [meta[name][int(i)] for i in source.indices]
            values = ["" if v is None else str(v).strip() for v in raw]
            num = _numeric(values)
            if num is not None and len(np.unique(num[np.isfinite(num)])) > 2:
                out.append(Column(self.name, str(name), num, False, (f"lower {name}", f"higher {name}")))
                continue
            distinct = len(set(values))
            if distinct < 2 or (distinct > 30 and distinct > ID_LIKE * len(values)):
                continue  # one value, or an identifier (a path, an id): it names no set
            out.append(Column(self.name, str(name), np.asarray(values, dtype=object), True))
        return out
