"""Sections: how each analysis's finding is shown, one module per report section, all in one
registry (``SECTIONS``), under the names of the analyses they present.

    from reportgen.sections import Section, View, register_section
"""

from __future__ import annotations

from .audit import AuditSection
from .axes import AxesSection
from .base import SECTIONS, Section, register_section, unregister_section
from .class_association import ClassAssociationSection
from .compare import CompareModelsSection
from .datasets import CompareDatasetsSection
from .depth import DepthSection
from .extremes import ExtremesSection
from .hard import HardSection
from .image_statistics import ImageStatisticsSection
from .maps import MapsSection
from .metrics import MetricsSection
from .neighbours import NeighboursSection
from .pca import PcaSection
from .quality import QualitySection
from .slices import SlicesSection
from .view import Budget, FigureCache, Figures, Thumbs, View

for _cls in (
    MetricsSection,
    AuditSection,
    SlicesSection,
    PcaSection,
    ClassAssociationSection,
    ImageStatisticsSection,
    ExtremesSection,
    MapsSection,
    NeighboursSection,
    HardSection,
    AxesSection,
    CompareModelsSection,
    CompareDatasetsSection,
    QualitySection,
    DepthSection,
):
    register_section(_cls)

__all__ = [
    "SECTIONS",
    "Section",
    "View",
    "Budget",
    "FigureCache",
    "Figures",
    "Thumbs",
    "register_section",
    "unregister_section",
]
