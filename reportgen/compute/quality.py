"""Image-quality flags from the images' properties (``compute.properties``): dark, light, blurry,
low information, grayscale (in a colour set), odd aspect ratio, odd size - CleanVision's kinds.

Each flag needs two things: the property is bad in absolute terms (CleanVision's thresholds where
it has them) and the image is an outlier of its own data set (robust z-score beyond ``Z`` = 4: the
median and the median absolute deviation of the set). So a set of night photos does not flag
every image as dark; when a kind would flag more than ``SET_SHARE`` of the images, it flags none
and says that the whole set is so. Blurriness is the variance of the Laplacian over the luminance
variance (an under-exposed image is not a blurry one), an outlier among the images of like
contrast (``CONTRAST_BINS``); low information is a narrow range of
brightness (the 99th minus the 5th percentile), an outlier also when under half the 1st
percentile of the set's other images (``GAP``); odd size compares the square root of the area to
the set's quartiles (3 IQR, as CleanVision).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .properties import PROPERTIES

KINDS = ("dark", "light", "blurry", "low_information", "grayscale", "odd_aspect_ratio", "odd_size")
#: What each kind means, for the report.
RULES = {
    "dark": "the brightest 1 % of its pixels under 0.32 (perceived brightness, 0-1)",
    "light": "its darkest 5 % of pixels above 0.95",
    "blurry": "Laplacian variance over luminance variance far below that of the set's images of like contrast",
    "low_information": "the 99th minus the 5th brightness percentile under 0.05 (almost one tone), far below the set's",
    "grayscale": "no colour (mean saturation under 0.01) in a set of colour images",
    "odd_aspect_ratio": "the shorter side under 0.35 of the longer",
    "odd_size": "the square root of its area beyond 3 IQR of the set's quartiles",
}
#: Robust z-score beyond which an image is an outlier of its set.
Z = 4.0
#: A kind that would flag more than this share of the images flags none: it describes the set.
SET_SHARE = 0.2
#: An almost one-tone image is an outlier of its set also when its range of brightness is under
#: this share of the 1st percentile of the set's other images (those not almost one tone): where a
#: set's ranges vary widely (faint and strong pictures alike), a one-tone image can sit within 4
#: robust deviations of the median and still be far below every other image (measured on 50,000
#: of the soft 16 px pictures of benchmarks/million.py and its 200 one-tone ones: those at -3.6 to
#: -4.9 deviations, 0.014-0.027 of range; the clean pictures' 0.1st percentile of range 0.054,
#: none beyond -2.4 deviations).
GAP = 0.5
#: Blurriness is judged among images of like contrast: the Laplacian's variance has a floor (sensor
#: noise, grain, compression) that weighs more on a faint picture than on a strong one, so where a
#: set's contrast varies widely the sharp images' scores spread and a blurred one hides in the
#: spread. The textured images are split into up to CONTRAST_BINS bins of equal count by contrast
#: (at least BIN_IMAGES each: a small set is one bin, the rule before) and the robust z-score is
#: taken within each. Measured on the million soft 16 px pictures of benchmarks/million.py and its
#: 200 blurred ones: recall 0 -> 0.54, no clean image flagged (the 94 other flags: resampled or
#: cropped near copies and other planted images); unchanged on Fashion-MNIST and tests/test_quality.py.
CONTRAST_BINS = 20
BIN_IMAGES = 500

_P = {name: i for i, name in enumerate(PROPERTIES)}


@dataclass(frozen=True, eq=False)
class QualityFlags:
    flags: np.ndarray  # (N, len(KINDS)) bool
    scores: np.ndarray  # (N, len(KINDS)) the value each rule reads (a larger one is worse)
    set_wide: dict[str, float]  # kind -> share of images it would flag, when it describes the whole set

    def rows(self, kind: str) -> np.ndarray:
        """The flagged rows of one kind, worst first."""
        k = KINDS.index(kind)
        r = np.flatnonzero(self.flags[:, k])
        return r[np.lexsort((r, -self.scores[r, k]))]

    @property
    def any(self) -> np.ndarray:
        return np.asarray(self.flags.any(axis=1))


def robust_z(v: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD) over the finite values; the IQR stands in for a zero MAD, and
    with no spread at all every value off the median is infinitely far."""
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros(len(v))
    med = float(np.median(v[ok]))
    mad = 1.4826 * float(np.median(np.abs(v[ok] - med)))
    if mad <= 0:
        q1, q3 = np.percentile(v[ok], [25, 75])
        mad = (q3 - q1) / 1.349
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (v - med) / mad if mad > 0 else np.where(v == med, 0.0, np.sign(v - med) * np.inf)
    return np.where(ok, z, 0.0)


def _among_like(v: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """``robust_z`` of v among the images of like contrast (CONTRAST_BINS bins of equal count of
    the finite values, at least BIN_IMAGES each); 0 where v is not finite."""
    ok = np.isfinite(v) & np.isfinite(contrast)
    bins = int(np.clip(ok.sum() // BIN_IMAGES, 1, CONTRAST_BINS))
    if bins == 1:
        return robust_z(np.where(ok, v, np.nan))
    c = np.log(np.maximum(contrast, 1e-12))
    which = np.searchsorted(np.quantile(c[ok], np.linspace(0, 1, bins + 1)[1:-1]), c)
    z = np.zeros(len(v))
    for k in range(bins):
        m = ok & (which == k)
        z[m] = robust_z(v[m])
    return z


def quality_flags(props: np.ndarray) -> QualityFlags:
    """Flags and scores of every kind for (N, len(PROPERTIES)) image properties."""
    p = np.asarray(props, np.float64)
    n = len(p)

    def col(name: str) -> np.ndarray:
        return p[:, _P[name]]

    p99, p5, contrast = col("bright_p99"), col("bright_p5"), col("contrast")
    sharp = np.log10(np.maximum(col("sharpness"), 1e-12) / np.maximum(contrast**2, 1e-12))
    spread = p99 - p5
    aspect = col("aspect")
    short = np.minimum(aspect, 1 / np.maximum(aspect, 1e-12))
    side = np.sqrt(np.maximum(col("size"), 0))
    saturation = col("saturation")
    flags = np.zeros((n, len(KINDS)), bool)
    scores = np.zeros((n, len(KINDS)))
    log_p99 = np.log(np.maximum(p99, 1e-6))
    flags[:, 0] = (p99 < 0.32) & (robust_z(log_p99) < -Z)
    scores[:, 0] = -log_p99
    flags[:, 1] = (p5 > 0.95) & (robust_z(p5) > Z)
    scores[:, 1] = p5
    textured = spread >= 0.05
    flags[:, 2] = textured & (_among_like(np.where(textured, sharp, np.nan), contrast) < -Z)
    scores[:, 2] = -sharp
    flat = spread < 0.05
    varied = spread[np.isfinite(spread) & ~flat]  # the 1st percentile of the others: the flat ones cannot lower it
    low_tail = np.percentile(varied, 1) if len(varied) else 0.0
    flags[:, 3] = flat & ((robust_z(np.log(np.maximum(spread, 1e-6))) < -Z) | (spread < GAP * low_tail))
    scores[:, 3] = -spread
    colour_set = np.nanmedian(saturation) >= 0.05 if n else False
    flags[:, 4] = (saturation < 0.01) & bool(colour_set)
    scores[:, 4] = -saturation
    flags[:, 5] = short < 0.35
    scores[:, 5] = -short
    q1, q3 = np.percentile(side, [25, 75]) if n else (0.0, 0.0)
    iqr = q3 - q1
    flags[:, 6] = (side < q1 - 3 * iqr) | (side > q3 + 3 * iqr)
    scores[:, 6] = np.abs(side - np.median(side)) if n else side
    set_wide = {}
    for k, kind in enumerate(KINDS):
        share = float(flags[:, k].mean()) if n else 0.0
        if share > SET_SHARE:
            set_wide[kind] = share
            flags[:, k] = False
    bad = ~np.isfinite(p).all(axis=1)
    flags[bad] = False
    return QualityFlags(flags, scores, set_wide)
