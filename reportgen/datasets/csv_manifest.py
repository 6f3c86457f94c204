"""A CSV manifest: one row per image, a path column and a label column; other columns kept."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..errors import DataError
from ..params import ResolvedPath
from .base import Dataset, DatasetParams, label_codes, path_dataset


class CsvDataset(DatasetParams):
    """A manifest: one row per image, a path column and a label column; other columns kept."""

    kind: Literal["csv"] = "csv"
    path: ResolvedPath
    path_column: str = "path"
    label_column: str = "label"
    root: ResolvedPath | None = Field(
        None, description="Folder image paths are relative to (default: the CSV's folder)."
    )


def load(spec: CsvDataset) -> Dataset:
    try:
        with open(spec.path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"dataset.path: CSV manifest not found: {spec.path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"dataset.path: cannot read CSV manifest {spec.path} ({exc})") from None
    if not rows:
        raise DataError(f"dataset.path: {spec.path} has no data rows")
    columns = list(rows[0].keys())
    for key, col in (("path_column", spec.path_column), ("label_column", spec.label_column)):
        if col not in columns:
            raise DataError(
                f"dataset.{key}: column {col!r} not in {spec.path} (columns: {', '.join(str(c) for c in columns)})"
            )
    root = (spec.root or spec.path.parent).resolve()
    paths: list[Path] = []
    raw_labels: list[str] = []
    for n, row in enumerate(rows, start=2):
        rel = (row.get(spec.path_column) or "").strip()
        if not rel:
            raise DataError(f"dataset.path: {spec.path} line {n}: empty {spec.path_column!r}")
        p = (root / rel).resolve()
        if not p.is_relative_to(root):
            raise DataError(
                f"dataset.path: {spec.path} line {n}: path {rel!r} points outside {root}; keep images inside the "
                "manifest's folder (or set dataset.root)"
            )
        paths.append(p)
        raw_labels.append((row.get(spec.label_column) or "").strip())
    labels, values = label_codes(raw_labels)
    metadata = {
        c: [r.get(c) for r in rows] for c in columns if c not in (spec.path_column, spec.label_column) and c is not None
    }
    return path_dataset(spec.name or spec.path.stem, "csv", root, paths, labels, tuple(values), metadata)
