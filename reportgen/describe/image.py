"""Image properties (``reportgen.compute.properties``): brightness, contrast, saturation,
colourfulness, sharpness, entropy, aspect ratio, size and dominant hue, each a column with a word
for either end ("darker" / "brighter", "blurrier" / "sharper")."""

from __future__ import annotations

import numpy as np

from ..compute.properties import HUES, PROPERTIES, image_properties
from .base import Column, Describer, DescribeSource

#: The words for a set below / above the rest, per property.
WORDS = {
    "brightness": ("darker", "brighter"),
    "contrast": ("lower-contrast", "higher-contrast"),
    "saturation": ("less saturated", "more saturated"),
    "colourfulness": ("less colourful", "more colourful"),
    "sharpness": ("blurrier", "sharper"),
    "entropy": ("flatter in tone", "richer in tone"),
    "aspect": ("taller", "wider"),
    "size": ("smaller", "larger"),
}


class ImageDescriber(Describer):
    name = "image"
    title = "image properties"

    def columns(self, source: DescribeSource, model: str | None) -> list[Column]:
        ds = source.dataset
        if not ds.has_images:
            return []
        props = (
            source.properties
            if source.properties is not None
            else source.cached_array(
                "image-properties",
                {"dataset": ds.fingerprint, "rows": source.indices},
                lambda: image_properties(ds.read, source.indices, ds.array),
            )
        )
        out = []
        for k, name in enumerate(PROPERTIES):
            v = np.asarray(props[:, k], np.float64)
            if name not in WORDS and name != "hue":
                continue  # the brightness percentiles the quality flags read
            if name == "hue":
                names = np.asarray(["grey", *HUES], dtype=object)
                hue = np.where(np.isfinite(v), v, -1).astype(np.int64) + 1
                out.append(Column(self.name, "hue", names[hue], True, template="mostly {value}"))
            else:
                out.append(Column(self.name, name, v, False, WORDS[name]))
        return out
