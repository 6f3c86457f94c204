"""The describer contract: a describer turns one dataset's samples into columns - numeric (each
sample a number, with a word for each end: "darker" / "brighter") or categorical (each sample a
value: "source = B") - that may tell a set of samples apart from the rest.

A describer computes nothing about sets: the describe stage (``reportgen.pipeline.describe``)
tests every set against every column (AUROC, permutation p-value, Benjamini-Hochberg over the whole
report) and keeps the names that pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ReportgenError
from ..fingerprint import code_fingerprint
from ..registry import Registry

if TYPE_CHECKING:
    from ..datasets import Dataset
    from ..options import DescribeOptions, ModelSpec
    from ..results import ModelRun


@dataclass(frozen=True, eq=False)
class Column:
    """One way to describe samples: a value per sample (NaN / "" where unknown)."""

    describer: str
    name: str  # "brightness", "source", "ImageNet class"
    values: np.ndarray  # numeric: (N,) float; categorical: (N,) str
    categorical: bool
    words: tuple[str, str] = ("", "")  # numeric: the words for a set below and above the rest
    template: str = "{column} = {value}"  # categorical: how one value reads
    quoted: bool = True  # a metadata column or an image property (its strong names become findings)

    def text(self, value: str) -> str:
        return self.template.format(column=self.name, value=value)


@dataclass(frozen=True, eq=False)
class DescribeSource:
    """One dataset's samples as the describers see them."""

    name: str
    dataset: Dataset
    indices: np.ndarray  # the dataset rows of the samples, in the report's order
    runs: Mapping[str, ModelRun]  # model name -> its embeddings of these samples
    models: Mapping[str, ModelSpec]
    options: DescribeOptions
    seed: int
    #: a value computed once and kept in the cache: (kind, parts that identify it, compute)
    cached_array: Callable[[str, dict[str, Any], Callable[[], np.ndarray]], np.ndarray]
    properties: np.ndarray | None = None  # the images' properties when the build measured them already


class Describer:
    """Base of the describers: ``columns(source, model)`` (``per_model``: once per model, with its
    name; else once per dataset, with None)."""

    name: ClassVar[str]
    title: ClassVar[str]
    per_model: ClassVar[bool] = False

    def columns(self, source: DescribeSource, model: str | None) -> list[Column]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def fingerprint(cls) -> str:
        return code_fingerprint(cls)


DESCRIBERS: Registry[type[Describer]] = Registry("describer", error=ReportgenError)


def register_describer(cls: type[Describer] | None = None, *, replace: bool = False) -> Any:
    """Add a describer class to the registry (usable as a decorator)."""

    def add(c: type[Describer]) -> type[Describer]:
        for attr in ("name", "title"):
            if not hasattr(c, attr):
                raise TypeError(f"describer {c.__name__} must define {attr!r}")
        if c.columns is Describer.columns:
            raise TypeError(f"describer {c.name} must implement columns()")
        return DESCRIBERS.register(c.name, c, replace=replace)

    return add if cls is None else add(cls)


def unregister_describer(name: str) -> None:
    DESCRIBERS.unregister(name)
