"""Near-duplicate images ("twins"): the same picture re-encoded, brightened or darkened, or
shifted by a few pixels. Decided on the pictures, not on a model's embedding.

Why not the embedding: measured on Fashion-MNIST with the packaged EfficientNet-Lite0 (96 px,
global_pool, docs/benchmarks.md), an edited copy's cosine distance to its original (median 0.085,
90th percentile 0.17) is no smaller than an ordinary nearest neighbour's (median 0.19, 1st
percentile 0.077): 43 % of natural nearest neighbours are closer than the 90th percentile of
copies, at every layer tried. A copy keeps the picture's detail; a look-alike does not.

How: each image is reduced to a small grey signature (``SIG_PX`` square, from its thumbnail).
Two images are compared after the best shift of up to ``SHIFT`` pixels and the best brightness and
contrast fit (least squares); their *difference* is the residual energy of the worst of a grid of
blocks relative to the image's variance (a local change - another pattern, a missing strap -
shows in one block even when the whole picture correlates well). Pairs to compare come from the
layer's neighbour graph and from the signatures' own nearest neighbours; a cheap correlation of
blurred signatures discards the clearly different ones first.

The threshold is calibrated on the data set itself: a seeded sample of its own images is edited
the way copies get edited (JPEG at quality 75, 6 % brighter, 6 % darker, shifted by 2 %) and the
threshold is the 99th percentile of those copies' differences to their originals (at most
``MAX_THRESHOLD``): a twin is as close to an image as a re-encoded, re-lit or shifted copy of it.
Crops and rescales are not twins here (an exact or edited copy is).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: An (N, ...) array, or anything that slices like one (thumbnails made on demand).
ArrayLike = Any

#: Side of the grey signature, in pixels.
SIG_PX = 32
#: Largest shift tried when comparing two signatures (pixels at SIG_PX).
SHIFT = 1
#: Side of the residual blocks (pixels at SIG_PX, inside the SHIFT border).
BLOCK = 6
#: Side of the block of lowest spatial frequencies in a signature's shift-invariant descriptor.
SPECTRUM = 8
#: Pairs whose descriptors (``spectra``) correlate less than this are not compared further.
PREFILTER = 0.97
#: Pairs within this multiple of the threshold at whole-pixel shifts are compared at half pixels too.
REFINE = 3.0
#: Images edited per calibration (each in every way of ``edits``).
CALIBRATION_IMAGES = 200
#: The calibration's quantile of edited copies' differences.
CALIBRATION_QUANTILE = 0.93
#: The threshold never exceeds this (noisy images whose copies differ a lot stay out of twins).
MAX_THRESHOLD = 0.15
#: Neighbours in the layer's graph taken as candidates (an edited copy's rank there: 90th percentile 4).
TWIN_GRAPH_NEIGHBOURS = 10
#: Nearest neighbours by signature added to the layer graph's candidates.
SIG_NEIGHBOURS = 10


def edits(image: np.ndarray) -> list[np.ndarray]:
    """JPEG at quality 75, 6 % brighter, 6 % darker, shifted by 2 % (edges repeated): RGB uint8
    images of the original's size."""
    from PIL import Image, ImageEnhance

    img = Image.fromarray(image)
    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    out = [np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))]
    out.append(np.asarray(ImageEnhance.Brightness(img).enhance(1.06)))
    out.append(np.asarray(ImageEnhance.Brightness(img).enhance(0.94)))
    dx, dy = max(1, round(0.02 * w)), max(1, round(0.02 * h))
    out.append(np.ascontiguousarray(np.pad(image, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[:h, :w]))
    return out


def signatures(thumbnails: ArrayLike, chunk: int = 8_192) -> np.ndarray:
    """(N, SIG_PX, SIG_PX) uint8 grey signatures of (N, t, t, 3) uint8 thumbnails (an array or
    anything that slices like one): the luma, box-averaged to SIG_PX when t is larger, rounded
    (1 KB a sample: a million take 1 GB)."""
    n = len(thumbnails)
    first = np.asarray(thumbnails[:1])
    t = first.shape[1] if n else SIG_PX
    side = t if t <= SIG_PX else SIG_PX
    out = np.empty((n, side, side), np.uint8)
    w = np.asarray([0.299, 0.587, 0.114], np.float32)
    for s in range(0, n, chunk):
        th = np.asarray(thumbnails[s : s + chunk])
        g = th.astype(np.float32) @ w if th.ndim == 4 else th.astype(np.float32)
        out[s : s + len(g)] = np.clip(np.rint(_box(g, side)), 0, 255)
    return out


def _box(g: np.ndarray, side: int) -> np.ndarray:
    """Box-average (B, t, t) to (B, side, side)."""
    t = g.shape[1]
    if t == side:
        return g
    if t % side == 0:
        f = t // side
        return g.reshape(len(g), side, f, side, f).mean((2, 4))
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(x, mode="F").resize((side, side), Image.Resampling.BOX)) for x in g])


def spectra(sig: np.ndarray, keep: int = SPECTRUM, chunk: int = 16_384) -> np.ndarray:
    """Shift-invariant descriptors of signatures: the square-rooted magnitudes of their lowest
    ``keep`` x ``keep`` spatial frequencies (both signs of the vertical one), centred, unit norm.
    A shifted copy keeps them (a cyclic shift exactly); measured on Fashion-MNIST, every edited
    copy was among its original's 10 nearest by this descriptor, 88 % by the pixels themselves."""
    n = len(sig)
    side = sig.shape[1] if sig.ndim == 3 else SIG_PX
    kr, kc = min(keep, side // 2), min(keep, side // 2 + 1)  # small thumbnails have fewer frequencies
    out = np.empty((n, (2 * kr - 1) * kc), np.float32)
    for s in range(0, n, chunk):
        g = np.asarray(sig[s : s + chunk], np.float32)
        f = np.abs(np.fft.rfft2(g - g.mean((1, 2), keepdims=True)))
        f = np.sqrt(np.concatenate([f[:, :kr, :kc], f[:, len(f[0]) - kr + 1 :, :kc]], 1).reshape(len(g), -1))
        f -= f.mean(1, keepdims=True)
        norm = np.linalg.norm(f, axis=1, keepdims=True)
        out[s : s + len(g)] = f / np.where(norm > 0, norm, 1)
    return out


#: Shifts tried, in pixels at SIG_PX: half-pixel steps (a copy shifted by one pixel of a 28 px
#: image moves 1.14 pixels of its 32 px thumbnail).
_OFFSETS = tuple(np.arange(-2 * SHIFT, 2 * SHIFT + 1) / 2)


def _shifted(b: np.ndarray, offset: float, r: int, m: int, axis: int) -> np.ndarray:
    """The m-pixel window of b starting at r + offset along ``axis`` (linear interpolation at
    half pixels)."""
    lo = int(np.floor(r + offset))

    def take(s0: int) -> np.ndarray:
        return b[:, s0 : s0 + m] if axis == 1 else b[:, :, s0 : s0 + m]

    return take(lo) if offset == lo - r else 0.5 * (take(lo) + take(lo + 1))


def differences(sig_a: np.ndarray, sig_b: np.ndarray, chunk: int = 4096, offsets: tuple = ()) -> np.ndarray:
    """Difference of each pair of signatures (row i of ``sig_a`` with row i of ``sig_b``): over
    shifts of up to SHIFT pixels and a least-squares brightness and contrast fit of b to a, the
    smallest largest-block residual energy relative to a's variance. 0: the same picture."""
    n, s, _ = sig_a.shape
    r = SHIFT
    inner = s - 2 * r
    nb = inner // BLOCK
    out = np.empty(n, np.float32)
    for c0 in range(0, n, chunk):
        a = np.asarray(sig_a[c0 : c0 + chunk, r : s - r, r : s - r], np.float32)
        a = a[:, : nb * BLOCK, : nb * BLOCK]
        a_c = a - a.mean((1, 2), keepdims=True)
        var_a = (a_c**2).mean((1, 2)) + 1.0  # + 1 grey level^2: flat images compare by their noise, not 0/0
        bp = np.asarray(sig_b[c0 : c0 + chunk], np.float32)
        best = np.full(len(a), np.inf, np.float32)
        m = nb * BLOCK
        for oy in offsets or _OFFSETS:
            rows_ = _shifted(bp, oy, r, m, axis=1)
            for ox in offsets or _OFFSETS:
                b = _shifted(rows_, ox, r, m, axis=2)
                b_c = b - b.mean((1, 2), keepdims=True)
                var_b = (b_c**2).mean((1, 2))
                alpha = (a_c * b_c).mean((1, 2)) / np.where(var_b > 0, var_b, 1)
                res = a_c - alpha[:, None, None] * b_c
                blocks = (res**2).reshape(len(a), nb, BLOCK, nb, BLOCK).mean((2, 4)).max((1, 2))
                np.minimum(best, blocks / var_a, out=best)
        out[c0 : c0 + len(a)] = best
    return out


@dataclass(frozen=True)
class Calibration:
    threshold: float
    copies: int  # edited copies measured
    quantile_value: float  # the copies' CALIBRATION_QUANTILE before the cap
    how: str


@dataclass(frozen=True, eq=False)
class TwinData:
    """What twin search needs of one data set: its signatures and its calibrated threshold."""

    signatures: np.ndarray  # (N, s, s) uint8
    calibration: Calibration


def calibrate(
    read: Callable[[int], np.ndarray], rows: np.ndarray, thumbnail_px: int, *, seed: int
) -> Calibration | None:
    """The twin threshold of a data set: ``read(row)`` gives an RGB uint8 image; a seeded sample of
    ``rows`` is edited (``edits``) and each copy's difference to its original is measured."""
    from ..images import make_thumbnail, to_rgb_uint8

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), min(CALIBRATION_IMAGES, len(rows)), replace=False))
    orig, copies = [], []
    for j in pick:
        try:
            img = to_rgb_uint8(read(int(rows[j])))
        except Exception:  # an unreadable image was skipped at extraction: skip it here too
            continue
        t0 = make_thumbnail(img, thumbnail_px)
        for e in edits(img):
            orig.append(t0)
            copies.append(make_thumbnail(e, thumbnail_px))
    if not copies:
        return None
    d = differences(signatures(np.stack(orig)), signatures(np.stack(copies)))
    q = float(np.quantile(d, CALIBRATION_QUANTILE))
    t = min(q, MAX_THRESHOLD)
    how = (
        f"difference <= {t:.3g}: the {100 * CALIBRATION_QUANTILE:.0f}th percentile of {len(d)} edited copies of this "
        "data set's own images "
        "(JPEG 75, 6 % brighter, 6 % darker, shifted 2 %)" + (f", capped from {q:.3g}" if q > t else "")
    )
    return Calibration(t, len(d), q, how)


def twin_data(
    read: Callable[[int], np.ndarray], rows: np.ndarray, thumbnails: ArrayLike, thumbnail_px: int, *, seed: int
) -> TwinData | None:
    """Signatures and calibration of one data set (``read(row)``: an image; ``thumbnails``: the
    stored thumbnails of ``rows``); None when none of its images can be read."""
    cal = calibrate(read, rows, thumbnail_px, seed=seed)
    return None if cal is None else TwinData(signatures(thumbnails), cal)


def _candidates(indices: np.ndarray, k: int) -> np.ndarray:
    """(P, 2) pairs i < j from the first k columns of a neighbour index array, unique."""
    n = len(indices)
    k = min(k, indices.shape[1])
    a = np.repeat(np.arange(n), k)
    b = indices[:, :k].ravel()
    keep = (b >= 0) & (a != b)
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return np.unique(lo * n + hi)


def signature_neighbours(low: np.ndarray, k: int, *, seed: int, other: np.ndarray | None = None) -> np.ndarray:
    """Each row's k nearest signatures (inner product of ``spectra`` descriptors): in ``low`` itself
    (self excluded; exact up to 20,000 rows, approximate above), or in ``other`` when given (exact)."""
    from .neighbours import build_graph

    if other is None:
        g, _ = build_graph(low, k, metric="cosine", method="auto", seed=seed)
        return g.indices
    import faiss  # exact inner-product search of the other rows against the reference

    index = faiss.IndexFlatIP(other.shape[1])
    index.add(np.ascontiguousarray(other, np.float32))
    return index.search(np.ascontiguousarray(low, np.float32), k)[1].astype(np.int64)


def find_twins(
    sig: np.ndarray,
    graph_indices: np.ndarray | None,
    k: int,
    threshold: float,
    *,
    seed: int,
    exclude_identical: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of one data set whose difference is at most ``threshold``, with their
    differences, most alike first. Candidates: the first ``k`` neighbours of the layer graph and
    SIG_NEIGHBOURS nearest signatures. ``exclude_identical``: (N, 16) content hashes; pairs with
    equal hashes (exact duplicates) are left out."""
    n = len(sig)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    low = spectra(sig)
    keys = [_candidates(signature_neighbours(low, min(SIG_NEIGHBOURS, n - 1), seed=seed), SIG_NEIGHBOURS)]
    if graph_indices is not None:
        keys.append(_candidates(graph_indices, k))
    key = np.unique(np.concatenate(keys))
    a, b = key // n, key % n
    if exclude_identical is not None:
        same = (exclude_identical[a] == exclude_identical[b]).all(1)
        a, b = a[~same], b[~same]
    return _score(sig, sig, a, b, low, low, threshold)


def _score(
    sig_a: np.ndarray,
    sig_b: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    low_a: np.ndarray,
    low_b: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    keep = np.empty(len(a), bool)
    for s in range(0, len(a), 1 << 20):
        keep[s : s + (1 << 20)] = (
            np.einsum("ij,ij->i", low_a[a[s : s + (1 << 20)]], low_b[b[s : s + (1 << 20)]]) >= PREFILTER
        )
    a, b = a[keep], b[keep]
    # whole-pixel shifts first (9 fits); half-pixel shifts (25) only where a twin is plausible
    d = np.empty(len(a), np.float32)
    whole = tuple(float(o) for o in range(-SHIFT, SHIFT + 1))
    for s in range(0, len(a), 1 << 16):
        d[s : s + (1 << 16)] = differences(sig_a[a[s : s + (1 << 16)]], sig_b[b[s : s + (1 << 16)]], offsets=whole)
    keep = d <= REFINE * threshold
    a, b, d = a[keep], b[keep], d[keep]
    for s in range(0, len(a), 1 << 16):
        d[s : s + (1 << 16)] = np.minimum(
            d[s : s + (1 << 16)], differences(sig_a[a[s : s + (1 << 16)]], sig_b[b[s : s + (1 << 16)]])
        )
    hit = d <= threshold
    a, b, d = a[hit], b[hit], d[hit]
    order = np.lexsort((b, a, d))
    return np.stack([a[order], b[order]], 1).astype(np.int64), d[order]


def cross_twins(
    sig_ref: np.ndarray, sig_other: np.ndarray, graph_twins: np.ndarray | None, threshold: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of another data set, its closest twin in the reference, if any: (rows of other,
    reference rows, differences). Candidates: ``graph_twins`` ((M, k) reference rows nearest in
    the layer) and SIG_NEIGHBOURS nearest reference signatures."""
    low_ref, low_other = spectra(sig_ref), spectra(sig_other)
    cand = [signature_neighbours(low_other, min(SIG_NEIGHBOURS, len(sig_ref)), seed=seed, other=low_ref)]
    if graph_twins is not None:
        cand.append(np.asarray(graph_twins).reshape(len(sig_other), -1))
    c = np.concatenate(cand, 1)
    rows = np.repeat(np.arange(len(sig_other)), c.shape[1])
    pairs, d = _score(sig_other, sig_ref, rows, c.ravel(), low_other, low_ref, threshold)
    # the closest twin per row (pairs come most alike first)
    first = np.unique(pairs[:, 0], return_index=True)[1] if len(pairs) else np.zeros(0, np.int64)
    return pairs[first, 0], pairs[first, 1], d[first]
