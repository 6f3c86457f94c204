"""Analyses: one module per report section, all in one registry (``ANALYSES``), in report order.

    from reportgen.analyses import LayerAnalysis, BuildAnalysis, register_analysis
"""
from __future__ import annotations

from .axes import Axes
from .base import (
    ANALYSES,
    Analysis,
    BuildAnalysis,
    BuildInput,
    LayerAnalysis,
    LayerInput,
    build_analyses,
    check_metric_names,
    get_analysis,
    layer_analyses,
    metric_docs,
    register_analysis,
    run_order,
    unregister_analysis,
)
from .classes import ClassAssociation
from .compare import CompareModels
from .extremes import Extremes
from .hard import HardSamples
from .image_stats import ImageStatistics
from .maps import Maps
from .metrics import Metrics
from .neighbours import Neighbours
from .pca import PcaAnalysis
from .shift import CompareDatasets

for _cls in (Metrics, PcaAnalysis, ClassAssociation, ImageStatistics, Extremes, Maps, Neighbours, HardSamples, Axes, CompareModels, CompareDatasets):
    register_analysis(_cls)

__all__ = [
    "ANALYSES", "Analysis", "LayerAnalysis", "BuildAnalysis", "LayerInput", "BuildInput", "register_analysis", "unregister_analysis",
    "get_analysis", "layer_analyses", "build_analyses", "run_order", "check_metric_names", "metric_docs",
]
