"""How near two images must be to be twins, measured on the data set's own images.

A seeded sample of the set's images is copied the ways copies really get made - resampled (down
and up, bilinear, bicubic, Lanczos, nearest), re-encoded (JPEG 50 and 95, PNG to JPEG), cropped
by up to 10 %, brightened or darkened and given more or less contrast by 10 %, turned grey - and
each copy is compared with its original (``twins.differences``): the copies' differences. The
same images are compared with their nearest *other* images by signature: the look-alikes'
differences. The threshold is the copies' 97th percentile, lowered when more than 0.75 % of the
images have another image of the set that close (then precision is kept and the report says that
not every copy can be told from a look-alike at this resolution). Each edit family's recall
is stated: the share of its copies within the threshold that the search's spectral prefilter
keeps too (``twins.prefilter``; what it drops are 10 % crops). Horizontal flips are twins only
where the spec asks (``report.mirrored_copies``): then the copies include mirrored ones, each pair
is compared both ways, and the look-alikes include each image's mirror's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .twin_compare import COMPARISONS, FINE, Comparison
from .twins import (
    PREFILTER,
    RATIO,
    Calibration,
    first_per_pair,
    mirror_order,
    mirrored,
    prefilter,
    signature_neighbours,
    signatures,
    spectra,
    zoomed_spectra,
)

#: Images copied per calibration (each in every family of ``FAMILIES``).
CALIBRATION_IMAGES = 300
#: The copies' quantile the threshold starts from. 0.95 until the coarse comparison aligned 10 %
#: crops (``twin_compare.COARSE``): they were most of the copies' worst 5 %, and aligned, the 95th
#: percentile of 10,000 Fashion-MNIST images' copies fell 0.0086 -> 0.0051, under where their
#: look-alikes begin (0.0072): JPEG 50 and resampled copies were lost and, the look-alikes no longer
#: limiting it, the model's opinion was not asked (``Calibration.look_alike``): precision 0.88,
#: recall 0.942. The 97th (0.0074) is capped at 0.0072 as before: 0.933 / 0.977.
COPY_QUANTILE = 0.97
#: At most this share of the images may have another image of the set within the threshold: a
#: data set holds some real copies (they count here), but where more images have a look-alike that
#: close, copies cannot be told from look-alikes and the threshold comes down to this share.
ALIKE_SHARE = 0.0075
#: Look-alikes measured per calibration image (its nearest others by signature).
LOOK_ALIKES = 8
#: Each comparison (``twin_compare.COMPARISONS``) is calibrated, and the one that finds the larger
#: share of the copies (``CLEARLY``) is this set's - unless its look-alikes lowered its threshold more than this
#: many times (the copies' COPY_QUANTILE over the threshold; the figures below were read at the
#: 95th, the quantile then): there most copies cannot be told
#: from look-alikes at all, the shares found are small and close, and the fine detail, down to the
#: sensor noise, is all that tells a copy from a near-identical scene - FINE is kept. The coarse
#: comparison finds more copies in either case, but where pictures carry little detail it also
#: pairs scenes that differ by noise alone, too rare for the calibration's 300 images to see. Measured
#: (docs/benchmarks.md): 10,000 Fashion-MNIST images, lowered 2.0x (FINE) and 1.2x (COARSE), shares
#: 0.868 and 0.921 - COARSE: recall 0.733 -> 0.919, precision 0.926 -> 0.929; the alike million's
#: first 200,000 images, 33x and 56x, shares 0.421 and 0.456 - COARSE would have paired 12 noise
#: twins (precision 0.967 -> 0.857 at recall 0.321 -> 0.391): FINE.
CROWDED = 8.0
#: A coarser comparison is chosen where it finds more than this share of the copies more than the
#: finer one: a near tie (1,797 digits: 0.647 against 0.646, 2 pairs found either way) keeps the
#: finer, so that a last copy's rounding on another machine does not switch the comparison.
CLEARLY = 0.01
#: The threshold never exceeds this (noisy images whose copies differ a lot stay out of twins).
MAX_THRESHOLD = 0.15


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _resample(img: np.ndarray, factor: float, how: str) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    f = getattr(Image.Resampling, how.upper())
    mid = Image.fromarray(img).resize((max(1, round(w * factor)), max(1, round(h * factor))), f)
    return np.asarray(mid.resize((w, h), f))


def _crop(img: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    ch, cw = max(1, round(h * share)), max(1, round(w * share))
    top, left = int(rng.integers(0, ch + 1)), int(rng.integers(0, cw + 1))
    part = img[top : h - (ch - top), left : w - (cw - left)]
    return np.asarray(Image.fromarray(part).resize((w, h), Image.Resampling.BILINEAR))


def _enhance(img: np.ndarray, what: str, factor: float) -> np.ndarray:
    from PIL import Image, ImageEnhance

    return np.asarray(getattr(ImageEnhance, what)(Image.fromarray(img)).enhance(factor))


def _grey(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.repeat(np.asarray(Image.fromarray(img).convert("L"))[..., None], 3, axis=2)


#: Edit families: name -> how a copy of an RGB uint8 image is made.
FAMILIES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "resampled (bilinear, 1.07x and back)": lambda im, r: _resample(im, 30 / 28, "bilinear"),
    "resampled (bicubic, 0.7x and back)": lambda im, r: _resample(im, 20 / 28, "bicubic"),
    "resampled (Lanczos, 2x and back)": lambda im, r: _resample(im, 2.0, "lanczos"),
    "resampled (nearest, 1.5x and back)": lambda im, r: _resample(im, 1.5, "nearest"),
    "JPEG 50": lambda im, r: _jpeg(im, 50),
    "JPEG 95": lambda im, r: _jpeg(im, 95),
    "cropped 5 %": lambda im, r: _crop(im, 0.05, r),
    "cropped 10 %": lambda im, r: _crop(im, 0.10, r),
    "10 % brighter": lambda im, r: _enhance(im, "Brightness", 1.1),
    "10 % darker": lambda im, r: _enhance(im, "Brightness", 0.9),
    "10 % more contrast": lambda im, r: _enhance(im, "Contrast", 1.1),
    "10 % less contrast": lambda im, r: _enhance(im, "Contrast", 0.9),
    "grey": lambda im, r: _grey(im),
}


#: The edit family of horizontally flipped copies, calibrated where the spec counts them as copies.
MIRRORED = "mirrored (horizontal flip)"


def families(mirrors: bool) -> dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    """The edit families copies are made in: FAMILIES, and MIRRORED where ``mirrors``."""
    return {**FAMILIES, MIRRORED: lambda im, r: np.ascontiguousarray(im[:, ::-1])} if mirrors else FAMILIES


#: Images are copied at most this many pixels on their longer side (a copy is compared as a 32-px
#: signature; a 100-megapixel photo resampled to 2x and back would cost minutes and change nothing).
WORKING_SIDE = 512


def _working_size(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    step = int(np.ceil(max(h, w) / WORKING_SIDE))
    return img if step <= 1 else np.asarray(Image.fromarray(img).reduce(step))


def calibrate(
    read: Callable[[int], np.ndarray],
    rows: np.ndarray,
    thumbnail_px: int,
    *,
    seed: int,
    signatures_of_rows: np.ndarray | None = None,
    mirrors: bool = False,
) -> Calibration | None:
    """The twin threshold of a data set: ``read(row)`` gives an RGB uint8 image; a seeded sample of
    ``rows`` is copied in every family of FAMILIES and compared with its originals, and with its
    nearest other images (``signatures_of_rows``: every row's signature, for the look-alikes;
    the copies' signatures are made at their side, SIG_PX without them). ``mirrors``: mirrored
    pictures count as copies (``families``), and every pair is compared both ways, as the search does."""
    from ..images import make_thumbnail, to_rgb_uint8

    fams = families(mirrors)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), min(CALIBRATION_IMAGES, len(rows)), replace=False))
    orig, copies, family, picked = [], [], [], []
    for j in pick:
        try:
            img = _working_size(to_rgb_uint8(read(int(rows[j]))))
        except Exception:  # an unreadable image was skipped at extraction: skip it here too
            continue
        t0 = make_thumbnail(img, thumbnail_px)
        picked.append(int(j))
        for name, edit in fams.items():
            orig.append(t0)
            copies.append(make_thumbnail(edit(img, rng), thumbnail_px))
            family.append(name)
    if not copies:
        return None
    side = None if signatures_of_rows is None else signatures_of_rows.shape[1]
    sig_o, sig_c = signatures(np.stack(orig), side), signatures(np.stack(copies), side)
    # a copy is found only if the search's spectral prefilter keeps it too (crops are what it drops;
    # how many, each comparison's zoom margin says)
    every = np.arange(len(sig_o))
    low_o, low_c, zoom_o, zoom_c = spectra(sig_o), spectra(sig_c), zoomed_spectra(sig_o), zoomed_spectra(sig_c)

    def kept(cmp: Comparison) -> list[np.ndarray]:
        ways = [np.zeros(len(every), bool)] + ([np.ones(len(every), bool)] if mirrors else [])  # flipped or not
        return [prefilter(low_o, low_c, zoom_o, zoom_c, every, every, f, cmp.zoom_margin)[0] >= PREFILTER for f in ways]

    others = [sig_c, mirrored(sig_c)] if mirrors else [sig_c]
    alike = None
    if signatures_of_rows is not None and len(signatures_of_rows) > LOOK_ALIKES + 1:
        alike = _look_alikes(signatures_of_rows, np.asarray(picked), mirrors)
    fam = np.asarray(family)
    # each comparison calibrated: the share of the copies found at the threshold its own look-alikes
    # leave decides between them, where they leave the copies a threshold (CROWDED)
    made = []
    for cmp in COMPARISONS.values():
        ways = [cmp.full(sig_o, other) for other in others]
        d = np.min(ways, axis=0)
        q = float(np.quantile(d, COPY_QUANTILE))
        threshold, look, impostor = min(q, MAX_THRESHOLD), False, float("nan")
        if alike is not None:
            impostor = _impostor(alike, len(picked), cmp)
            if impostor < threshold:  # more than ALIKE_SHARE of the images have an ordinary twin that close
                threshold, look = impostor, True
        found = np.any([(dw <= threshold) & kw for dw, kw in zip(ways, kept(cmp))], axis=0)
        made.append(_Calibrated(float(found.mean()), cmp, d, q, threshold, look, impostor, found))
    clear = [m for m in made if m.quantile <= CROWDED * m.threshold]  # copies not crowded out by look-alikes
    chosen = clear[0] if clear else made[0]  # COMPARISONS come finest first
    for m in clear[1:]:  # a coarser one where it finds clearly more of the copies
        if m.share > chosen.share + CLEARLY:
            chosen = m
    _, cmp, d, q, threshold, look, impostor, found = chosen
    recall = {name: float(found[fam == name].mean()) for name in fams}
    weak = [f"{name} {100 * r:.0f} %" for name, r in recall.items() if r < 0.9]
    how = (
        f"on {sig_o.shape[1]}-px grey signatures, difference <= {threshold:.3g}: "
        f"the {100 * COPY_QUANTILE:.0f}th percentile of {len(d):,} copies of this data "
        "set's own images made the ways copies get made (resampled, JPEG 50-95, cropped up to 10 %, 10 % brighter, "
        "darker, more or less contrast, grey"
        + (", mirrored; each pair compared both ways)" if mirrors else "; mirrored pictures are not counted as copies)")
        + (f", {q:.3g}, capped" if q > MAX_THRESHOLD and not look else "")
        + (
            f", {q:.3g}, lowered to where ordinary look-alikes of this set come as close: at this resolution "
            "not every copy can be told from a look-alike"
            if look
            else ""
        )
        + ("; compared in their fine detail" if cmp is FINE else "; compared by their shapes (fine detail blurred)")
        + (f"; copies found at this threshold: {', '.join(weak)} (every other edit 90 % or more)" if weak else "")
    )
    return Calibration(threshold, len(d), q, how, recall, look, impostor, mirrors, cmp.name)


class _Calibrated(NamedTuple):
    """One comparison calibrated: the share of the copies found, the comparison, the copies'
    differences and quantile, the threshold, whether look-alikes lowered it and to what, which
    copies were found."""

    share: float
    cmp: Comparison
    d: np.ndarray
    quantile: float
    threshold: float
    look: bool
    impostor: float
    found: np.ndarray


def _impostor(alike: tuple[np.ndarray, ...], n_picked: int, cmp: Comparison) -> float:
    """The look-alikes' difference that ALIKE_SHARE of the calibration images come as close as, at
    ``cmp`` (``alike``: ``_look_alikes``), inf where too few were measured."""
    a, diff = _closest(alike, cmp)
    if not np.isfinite(diff).any():
        return float("inf")
    # each image's nearest and second-nearest other image: where the nearest stands out (the ratio
    # test), it is a copy the set holds, not a look-alike; the crowds are the look-alikes a copy must
    # be told from
    order = np.lexsort((diff, a))
    ia, dd = a[order], diff[order]
    first = np.searchsorted(ia, np.arange(n_picked))
    has2 = (first + 1 < len(ia)) & (ia[np.minimum(first + 1, len(ia) - 1)] == np.arange(n_picked))
    has1 = (first < len(ia)) & (ia[np.minimum(first, len(ia) - 1)] == np.arange(n_picked))
    m1 = np.where(has1, dd[np.minimum(first, len(ia) - 1)], np.inf)
    m2 = np.where(has2, dd[np.minimum(first + 1, len(ia) - 1)], np.inf)
    crowd = np.isfinite(m1) & (m1 > RATIO * m2)
    closest = np.where(crowd, m1, np.inf)  # a distinct nearest counts as no look-alike at all
    closest = closest[np.isfinite(m1)]
    return float(np.quantile(closest, ALIKE_SHARE)) if len(closest) >= 20 else float("inf")


def _look_alikes(sig: np.ndarray, picked: np.ndarray, mirrors: bool) -> tuple[np.ndarray, ...]:
    """(calibration image, other image, the first's signature, the other's as compared, whether they
    are the same picture) of each picked image's LOOK_ALIKES nearest other images by descriptor
    (``mirrors``: and those nearest to its mirror, compared mirrored; each image once, the closer way
    - ``_closest``)."""
    low = spectra(sig)
    ways = [(low[picked], False)] + ([(low[picked][:, mirror_order(sig.shape[1])], True)] if mirrors else [])
    a_all, b_all, o_all, same_all = [], [], [], []
    for query, turned in ways:
        near = signature_neighbours(query, LOOK_ALIKES + 1, other=low)
        a = np.repeat(np.arange(len(picked)), near.shape[1])
        b = near.ravel()
        ref = picked[a]
        other = mirrored(sig[b]) if turned else sig[b]
        a_all.append(a)
        b_all.append(b)
        o_all.append(other)
        same_all.append((ref == b) | (sig[ref] == other).all(axis=(1, 2)))
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    return a, b, sig[picked[a]], np.concatenate(o_all), np.concatenate(same_all)


def _closest(alike: tuple[np.ndarray, ...], cmp: Comparison) -> tuple[np.ndarray, np.ndarray]:
    """(calibration image, difference by ``cmp``) of each look-alike of ``_look_alikes``, inf where
    the two are the same image or identical pictures; each (image, other) once, the closer way."""
    a, b, ref, other, same = alike
    diff = np.full(len(a), np.inf, np.float32)
    if (~same).any():
        diff[~same] = cmp.full(ref[~same], other[~same])
    first = first_per_pair(a, b, np.lexsort((diff, b, a)))
    return a[first], diff[first]
