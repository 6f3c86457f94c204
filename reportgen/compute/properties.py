"""Image properties, computed once from the decoded pixels: what a reviewer would say of a picture
before knowing what is in it (dark, blurry, colourful, busy, wide, small, mostly blue).

Each image is measured at most ``SIDE`` pixels on its longer side (box-downscaled, never upscaled),
so a sharpness or an entropy means the same for a phone photo and a thumbnail; width and height
are the original's. Grey images have no saturation, colourfulness or hue (the describers then skip
those columns: every value is equal).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..machine import cores

#: Images are measured at most this many pixels on their longer side.
SIDE = 256
#: The properties, in the order of the columns ``image_properties`` returns. ``bright_p99`` and
#: ``bright_p5``: percentiles of the perceived brightness of the pixels (CleanVision's formula),
#: what the dark and light quality flags read.
PROPERTIES = (
    "brightness",
    "contrast",
    "saturation",
    "colourfulness",
    "sharpness",
    "entropy",
    "aspect",
    "size",
    "hue",
    "bright_p99",
    "bright_p5",
)
#: Hue names for the dominant hue of the saturated pixels (a sixth of the circle each, from red).
HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")
#: Below this mean saturation an image counts as grey (no dominant hue).
GREY = 0.12


def _downscale(img: np.ndarray) -> np.ndarray:
    """Box-average to at most SIDE pixels on the longer side, on the uint8 pixels (Pillow's
    ``reduce``: a 100-megapixel image is never turned into floats whole)."""
    h, w = img.shape[:2]
    step = int(np.ceil(max(h, w) / SIDE))
    if step <= 1:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).reduce(step))


def _one(img: np.ndarray) -> np.ndarray:
    """The properties of one RGB uint8 image (H, W, 3), as floats (hue: an index into HUES, -1 grey)."""
    h, w = img.shape[:2]
    small = _downscale(np.asarray(img))
    if small.dtype == np.uint8 and (small.ndim == 2 or small.shape[2] == 1):
        return _grey(small.reshape(1, *small.shape[:2]), w / max(h, 1), float(w * h))[0]
    x = small.astype(np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    rg, yb = r - g, 0.5 * (r + g) - b  # Hasler and Suesstrunk (2003)
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    sharp = float(_sharpness(lum[None])[0])
    hist = np.bincount(np.clip((lum * 255).astype(np.int64), 0, 255).ravel(), minlength=256).astype(np.float64)
    entropy = float(_entropy(hist[None])[0])
    hue = -1.0
    if float(sat.mean()) >= GREY:
        d = np.maximum(mx - mn, 1e-6)
        hr = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
        strong = sat > 0.25
        if strong.any():
            bins = np.floor((hr[strong] + 0.5) % 6).astype(np.int64)  # red centred on 0
            hue = float(np.bincount(bins, minlength=6).argmax())
    perceived = np.sqrt(0.241 * r * r + 0.691 * g * g + 0.068 * b * b)
    p5, p99 = np.percentile(perceived, [5, 99])
    return np.asarray(
        [
            lum.mean(),
            lum.std(),
            sat.mean(),
            colourful,
            sharp,
            entropy,
            w / max(h, 1),
            float(w * h),
            hue,
            p99,
            p5,
        ],
        np.float64,
    )


def _batch(images: np.ndarray) -> np.ndarray:
    """``_one`` for a stack of equal-size uint8 images (B, H, W[, C]) of at most SIDE pixels a side,
    in whole-array operations (a million 16-pixel images: a Python call each took 4 minutes)."""
    n, h, w = images.shape[:3]
    if images.ndim == 3 or images.shape[3] == 1:
        return _grey(images.reshape(n, h, w), w / max(h, 1), float(w * h))
    x = images.reshape(n, h * w, 3).astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    # elementwise, not reduced along an axis of 3: the same values, a twentieth of the time (that
    # reduction was half of this function's)
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = np.hypot(rg.std(axis=1), yb.std(axis=1)) + 0.3 * np.hypot(rg.mean(axis=1), yb.mean(axis=1))
    sharp = _sharpness(lum.reshape(n, h, w))
    bins = np.clip((lum * 255).astype(np.int64), 0, 255) + 256 * np.arange(n)[:, None]
    hist = np.bincount(bins.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    entropy = _entropy(hist)
    hue = np.full(n, -1.0)
    coloured = np.flatnonzero(sat.mean(axis=1) >= GREY)
    if len(coloured):
        rc, gc, bc = r[coloured], g[coloured], b[coloured]
        mxc, mnc, sc = mx[coloured], mn[coloured], sat[coloured]
        d = np.maximum(mxc - mnc, 1e-6)
        hr = np.where(mxc == rc, ((gc - bc) / d) % 6, np.where(mxc == gc, (bc - rc) / d + 2, (rc - gc) / d + 4))
        strong = sc > 0.25
        hb = np.floor((hr + 0.5) % 6).astype(np.int64) + 6 * np.arange(len(coloured))[:, None]
        counts = np.bincount(hb[strong], minlength=6 * len(coloured)).reshape(len(coloured), 6)
        has = strong.any(axis=1)
        hue[coloured[has]] = counts[has].argmax(axis=1)
    perceived = np.sqrt(0.241 * r * r + 0.691 * g * g + 0.068 * b * b)
    p5, p99 = np.percentile(perceived, [5, 99], axis=1)
    return np.stack(
        [
            lum.mean(axis=1),
            lum.std(axis=1),
            sat.mean(axis=1),
            colourful,
            sharp,
            entropy,
            np.full(n, w / max(h, 1)),
            np.full(n, float(w * h)),
            hue,
            p99,
            p5,
        ],
        axis=1,
    ).astype(np.float64)


def _sharpness(lum: np.ndarray) -> np.ndarray:
    """(B,) the variance of the Laplacian of (B, H, W) luma images (0 under 3 pixels a side)."""
    n, h, w = lum.shape
    if h < 3 or w < 3:
        return np.zeros(n)
    lap = lum[:, 1:-1, :-2] + lum[:, 1:-1, 2:] + lum[:, :-2, 1:-1] + lum[:, 2:, 1:-1] - 4 * lum[:, 1:-1, 1:-1]
    return lap.reshape(n, -1).var(axis=1)


def _entropy(hist: np.ndarray) -> np.ndarray:
    """(B,) the Shannon entropy in bits of (B, 256) histograms of grey levels."""
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0.0).sum(axis=1)


def _grey(images: np.ndarray, aspect: float, size: float) -> np.ndarray:
    """``_batch`` of grey uint8 images (B, H, W) with the original's ``aspect`` and ``size``: no
    saturation, colourfulness or hue; brightness and perceived brightness are the pixel values
    (the luma and perceived-brightness weights each sum to 1), the entropy and the percentiles read
    from each image's histogram of its 256 levels (a third of the colour path's cost: a million
    28-pixel images spent 54 s here)."""
    n, h, w = images.shape
    flat = images.reshape(n, h * w)
    lum = flat.astype(np.float32) / 255.0
    sharp = _sharpness(lum.reshape(n, h, w))
    hist = np.bincount((flat + (256 * np.arange(n))[:, None]).ravel(), minlength=256 * n).reshape(n, 256)
    entropy = _entropy(hist)
    cum = hist.cumsum(axis=1)

    def percentile(q: float) -> np.ndarray:  # np.percentile's linear interpolation, on the histogram
        pos = q / 100 * (h * w - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        at_lo = (cum <= lo).sum(axis=1)  # the level of the lo-th smallest pixel
        at_hi = (cum <= min(lo + 1, h * w - 1)).sum(axis=1)
        return (at_lo + frac * (at_hi - at_lo)) / 255.0

    zero = np.zeros(n)
    return np.stack(
        [
            lum.mean(axis=1),
            lum.std(axis=1),
            zero,
            zero,
            sharp,
            entropy,
            np.full(n, aspect),
            np.full(n, size),
            np.full(n, -1.0),
            percentile(99),
            percentile(5),
        ],
        axis=1,
    ).astype(np.float64)


#: Images measured together by ``_batch``.
BATCH = 2048


def image_properties(
    read: Callable[[int], np.ndarray], indices: np.ndarray, array: np.ndarray | None = None
) -> np.ndarray:
    """(N, len(PROPERTIES)) properties of the images ``read(i)`` for each of ``indices`` (NaN where
    an image cannot be read), on every core (decoding releases the GIL). ``array``: the data set's
    whole (N, H, W[, C]) uint8 image array, when it keeps one; small images are then measured a
    batch at a time."""
    out = np.full((len(indices), len(PROPERTIES)), np.nan)
    if (
        array is not None
        and array.dtype == np.uint8
        and array.ndim in (3, 4)
        and (array.ndim == 3 or array.shape[3] in (1, 3))
        and max(array.shape[1:3]) <= SIDE
        and len(indices)
    ):
        from ..streaming import gather_rows

        idx = np.asarray(indices, np.int64)

        def batch(s: int) -> None:
            out[s : s + BATCH] = _batch(gather_rows(array, idx[s : s + BATCH]))

        with ThreadPoolExecutor(max(1, min(cores(), 4))) as pool:
            list(pool.map(batch, range(0, len(idx), BATCH)))
        return out

    def one(k: int) -> None:
        try:
            out[k] = _one(read(int(indices[k])))
        except Exception:  # an unreadable image has no properties; it was reported by the extraction
            pass

    workers = max(1, min(cores(), 8))
    if workers == 1 or len(indices) < 64:
        for k in range(len(indices)):
            one(k)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(indices)), chunksize=64))
    return out


def square_side(properties: np.ndarray | None) -> float | None:
    """The median side of the images' centre squares (what a thumbnail is made of: the shorter
    side), from ``image_properties``' rows; None for none."""
    if properties is None or not len(properties):
        return None
    size, aspect = properties[:, PROPERTIES.index("size")], properties[:, PROPERTIES.index("aspect")]
    ok = (size > 0) & (aspect > 0)
    if not ok.any():
        return None
    return float(np.median(np.sqrt(size[ok] * np.minimum(aspect[ok], 1 / aspect[ok]))))
