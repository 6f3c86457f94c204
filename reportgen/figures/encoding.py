"""Images for the HTML: class colours, PNG and JPEG bytes, data URIs."""

from __future__ import annotations

import base64
import colorsys
import io
from typing import Any

import numpy as np


def listed_colours(name: str) -> list[tuple[float, ...]]:
    """The colours of one of matplotlib's listed colour maps (tab10, tab20), in order."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    cmap = colormaps[name]
    assert isinstance(cmap, ListedColormap)
    colours: Any = cmap.colors
    return [tuple(float(v) for v in c) for c in colours]


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 class colours: tab10 / tab20 for few classes, golden-ratio hues beyond."""
    cols: list[tuple[float, ...]]
    if n <= 10:
        cols = listed_colours("tab10")[:n]
    elif n <= 20:
        cols = listed_colours("tab20")[:n]
    else:
        cols = []
        for i in range(n):
            h = (i * 0.618033988749895) % 1.0
            l = (0.38, 0.52, 0.66)[i % 3]
            s = (0.85, 0.65)[(i // 3) % 2]
            cols.append(colorsys.hls_to_rgb(h, l, s))
    return (np.asarray(cols)[:, :3] * 255).round().astype(np.uint8)


def hex_colour(rgb: np.ndarray | tuple[int, int, int]) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buf, format="JPEG", quality=quality, optimize=True, subsampling=0 if quality >= 90 else 2
    )
    return buf.getvalue()


def encode_small(pixels: np.ndarray, quality: int = 85) -> tuple[bytes, str]:
    """PNG or JPEG, whichever is smaller (small flat images favour PNG)."""
    png = encode_png(pixels)
    jpg = encode_jpeg(pixels, quality)
    return (png, "image/png") if len(png) <= len(jpg) * 1.15 else (jpg, "image/jpeg")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_uri(thumb: np.ndarray, quality: int = 85) -> str:
    data, mime = encode_small(np.asarray(thumb), quality)
    return data_uri(data, mime)
