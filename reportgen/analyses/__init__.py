"""Analyses: what the report finds, one module per analysis, all in one registry (``ANALYSES``),
in report order. Each computes a frozen finding; its section (``reportgen.sections``) shows it.

    from reportgen.analyses import LayerAnalysis, BuildAnalysis, register_analysis
"""

from __future__ import annotations

from .audit import Audit
from .axes import Axes
from .base import (
    ANALYSES,
    Analysis,
    BuildAnalysis,
    BuildInput,
    Column,
    LayerAnalysis,
    LayerInput,
    Where,
    build_analyses,
    check_metric_names,
    layer_analyses,
    metric_anchor,
    metric_docs,
    register_analysis,
    run_order,
    unregister_analysis,
)
from .classes import ClassAssociation
from .compare import CompareModels
from .depth import Depth
from .extremes import Extremes
from .hard import HardSamples
from .image_stats import ImageStatistics
from .maps import Maps
from .metrics import Metrics
from .neighbours import Neighbours
from .pca import PcaAnalysis
from .quality import ImageQuality
from .shift import CompareDatasets
from .slices import Slices

for _cls in (
    Metrics,
    Audit,
    Slices,
    PcaAnalysis,
    ClassAssociation,
    ImageStatistics,
    Extremes,
    Maps,
    Neighbours,
    HardSamples,
    Axes,
    CompareModels,
    CompareDatasets,
    ImageQuality,
    Depth,
):
    register_analysis(_cls)

__all__ = [
    "ANALYSES",
    "Analysis",
    "LayerAnalysis",
    "BuildAnalysis",
    "LayerInput",
    "BuildInput",
    "Column",
    "Where",
    "register_analysis",
    "unregister_analysis",
    "layer_analyses",
    "build_analyses",
    "run_order",
    "check_metric_names",
    "metric_docs",
    "metric_anchor",
]
