"""Describers: words for what a set of samples shares, from the data's metadata, the model's own
ImageNet head and the images' properties. One file per describer, one registry; the describe stage
(``reportgen.pipeline.describe``) tests them against every set the analyses name.

    from reportgen.describe import Describer, register_describer
"""

from __future__ import annotations

from .base import DESCRIBERS, Column, Describer, DescribeSource, register_describer, unregister_describer
from .head import HeadDescriber
from .image import ImageDescriber
from .metadata import MetadataDescriber

for _cls in (MetadataDescriber, HeadDescriber, ImageDescriber):
    register_describer(_cls)

__all__ = [
    "DESCRIBERS",
    "Column",
    "Describer",
    "DescribeSource",
    "register_describer",
    "unregister_describer",
]
