"""Pipeline: ``build(spec) -> BuildResult``, the one place that knows the order of the stages.

    embed (``embedding``) -> each layer (``layer``, ``maps``) -> the build (``build``) -> render -> write

``process`` holds the build's clock (``Stages``) and the process-wide housekeeping only the command
line turns on (``ProcessHooks``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..datasets import Dataset, Selection
from ..machine import keeps_process, peak_rss_mb
from ..results import ModelRun
from ..specification import ReportSpec
from .build import build
from .embedding import Embedded, embed_datasets
from .process import ProcessHooks, Stages

__all__ = ["build", "extract_embeddings", "embed_datasets", "Embedded", "ProcessHooks", "Stages", "peak_rss_mb"]


@keeps_process
def extract_embeddings(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    modules: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    stages: Stages | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Dataset, Selection, tuple[ModelRun, ...]]:
    """The data and embedding stages of the reference dataset: every model's embeddings, from the
    store or computed (``on_shard``: each finished shard's record on Ray)."""
    data = embed_datasets(
        spec.model_copy(update={"extra_datasets": []}),
        use_cache=use_cache,
        cache_dir=cache_dir,
        modules=modules,
        max_samples=max_samples,
        progress=progress,
        stages=stages,
        on_shard=on_shard,
    )
    return data.ds, data.selection, data.runs
