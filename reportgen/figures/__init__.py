"""Figures for the report's sections: plots (``plots``), mosaics of thumbnails (``mosaics``) and the
encoders that put images into the HTML (``encoding``). Only the presentation side
(``reportgen.sections``, ``reportgen.render``) imports this package.
"""

from __future__ import annotations

from .encoding import data_uri, encode_jpeg, encode_png, encode_small, hex_colour, palette, thumbnail_uri
from .mosaics import Mosaic, grid_mosaic, image_mosaic
from .plots import (
    CENTROID_LABELS,
    axis_histogram,
    depth_plot,
    figure_png,
    figure_png_points,
    frame_scatter,
    heatmap,
    matrix_heatmap,
    overlay_scatter,
    scatter_plot,
    scree_plot,
    slices_plot,
)

__all__ = [
    "palette",
    "hex_colour",
    "encode_png",
    "encode_jpeg",
    "encode_small",
    "data_uri",
    "figure_png_points",
    "thumbnail_uri",
    "Mosaic",
    "image_mosaic",
    "grid_mosaic",
    "CENTROID_LABELS",
    "figure_png",
    "scree_plot",
    "scatter_plot",
    "slices_plot",
    "depth_plot",
    "heatmap",
    "axis_histogram",
    "matrix_heatmap",
    "frame_scatter",
    "overlay_scatter",
]
