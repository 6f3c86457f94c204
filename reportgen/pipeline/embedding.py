"""The data and embedding stages: every dataset of the spec (the reference and each compared one)
loaded, its samples selected, and each one through every model, on the spec's engine - all before
any analysis starts."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datasets import Dataset, DatasetParams, Selection, load_dataset, select_samples
from ..embed import EmbedRequest, Engine, embed, engine_for
from ..embed.precomputed import precomputed_run
from ..errors import DataError, SpecError
from ..results import ModelRun
from ..specification import ReportSpec
from ..store.embeddings import EmbeddingStore
from .process import Stages


@dataclass(frozen=True, eq=False)
class Embedded:
    """Every dataset through every model: the reference dataset, its selection and one run per
    model; then each compared dataset's name and runs, model by model in the same order."""

    ds: Dataset
    selection: Selection
    runs: tuple[ModelRun, ...]
    compared: tuple[tuple[str, tuple[ModelRun, ...]], ...] = ()
    compared_data: tuple[Dataset, ...] = ()  # each compared dataset, in the order of ``compared``


def check_axes(spec: ReportSpec, ds: Dataset) -> None:
    """Class names in report.axes must exist: checked before any model runs."""
    names = ds.class_names
    for i, (a, b) in enumerate(spec.report.axes):
        for c in (a, b):
            if c not in names:
                hint = difflib.get_close_matches(c, names, n=1)
                more = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f" (classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
                )
                raise SpecError(f"report.axes[{i}]: class {c!r} is not in the dataset{more}")
        if a == b:
            raise SpecError(f"report.axes[{i}]: both ends are {a!r}; name two different classes")


def _through_models(
    spec: ReportSpec,
    dspec: DatasetParams,
    ds: Dataset,
    sel: Selection,
    engine: Engine,
    store: EmbeddingStore,
    *,
    modules: Mapping[str, Any],
    use_cache: bool,
    progress: bool,
    stages: Stages,
    suffix: str = "",
) -> tuple[ModelRun, ...]:
    runs = []
    for mspec in spec.models:
        request = EmbedRequest(
            mspec, dspec, ds, sel.indices, spec.seed, spec.report.thumbnail_px, module=modules.get(mspec.name)
        )
        with stages.stage(f"extract: {mspec.name}{suffix}"):
            runs.append(embed(request, engine, store, use_cache=use_cache, progress=progress))
    return tuple(runs)


def _precomputed_compared(
    spec: ReportSpec, reference: ModelRun, store: EmbeddingStore, max_samples: int | None, stages: Stages
) -> tuple[tuple[tuple[str, tuple[ModelRun, ...]], ...], tuple[Dataset, ...]]:
    """Compared datasets of precomputed embeddings: each must hold the reference's layers, of the
    same widths (the same model's vectors); they are read as given."""
    compared, data = [], []
    for k, dspec in enumerate(spec.extra_datasets, start=1):
        with stages.stage("data: load (compared)"):
            dx = load_dataset(dspec)
            sx = select_samples(dx, limit=dspec.limit, method=dspec.sample, seed=spec.seed, max_samples=max_samples)
        ours = {name: v.shape[1] for name, v in reference.embeddings.layers.items()}
        theirs = {name: v.shape[1] for name, v in (dx.vectors or {}).items()}
        if ours != theirs:
            show = ", ".join(f"{n} ({d}-d)" for n, d in theirs.items())
            want = ", ".join(f"{n} ({d}-d)" for n, d in ours.items())
            raise DataError(
                f"datasets[{k}]: its vectors are {show}, the reference's {want}; compared embeddings must come from "
                "the same model and layers"
            )
        with stages.stage("extract: precomputed (compared)"):
            xrun = precomputed_run(dx, sx.indices, spec.report.thumbnail_px, store.root / "scratch")
        compared.append((dspec.name or f"{dx.name} ({dspec.kind})", (xrun,)))
        data.append(dx)
    return tuple(compared), tuple(data)


def embed_datasets(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    modules: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    stages: Stages | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> Embedded:
    """The data and embedding stages for every dataset: each model's embeddings from the store, or
    computed on the engine ``execution`` names (``on_shard``: each finished Ray shard's record)."""
    stages = stages or Stages()
    modules = dict(modules or {})
    if spec.execution.engine == "ray" and modules:
        raise SpecError(
            "execution.engine: ray loads every model in its workers from the spec; a Python module object "
            f"({', '.join(modules)}) cannot travel there - use timm, factory or checkpoint, or engine: local"
        )
    store = EmbeddingStore(Path(os.fspath(cache_dir)) if cache_dir is not None else spec.cache_dir)
    with stages.stage("data: load"):
        ds = load_dataset(spec.dataset)
        sel = select_samples(
            ds, limit=spec.dataset.limit, method=spec.dataset.sample, seed=spec.seed, max_samples=max_samples
        )
        check_axes(spec, ds)
    if ds.vectors is not None:
        with stages.stage("extract: precomputed"):
            run = precomputed_run(ds, sel.indices, spec.report.thumbnail_px, store.root / "scratch")
        return Embedded(ds, sel, (run,), *_precomputed_compared(spec, run, store, max_samples, stages))
    engine = engine_for(spec.execution, on_shard=on_shard)
    common: dict[str, Any] = {"modules": modules, "use_cache": use_cache, "progress": progress, "stages": stages}
    runs = _through_models(spec, spec.dataset, ds, sel, engine, store, **common)
    compared, compared_data = [], []
    for dspec in spec.extra_datasets:
        with stages.stage("data: load (compared)"):
            dx = load_dataset(dspec)
            sx = select_samples(dx, limit=dspec.limit, method=dspec.sample, seed=spec.seed, max_samples=max_samples)
        xruns = _through_models(spec, dspec, dx, sx, engine, store, suffix=" (compared)", **common)
        compared.append((dspec.name or f"{dx.name} ({dspec.kind})", xruns))
        compared_data.append(dx)
    return Embedded(ds, sel, runs, tuple(compared), tuple(compared_data))
