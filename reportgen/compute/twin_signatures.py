"""Image signatures for twin search (``reportgen.compute.twins``): each image's small grey
signature, its shift-invariant descriptor (the lowest spatial frequencies' magnitudes), the same
descriptor of the signature magnified as a crop shows it, the prefilter that correlates them, and
each signature's nearest others by descriptor (the search's own candidates).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.fft as _fft  # 4x NumPy's FFT on stacks of 32-px signatures (2,048: 14 ms against 57)

#: An (N, ...) array, or anything that slices like one (thumbnails made on demand).
ArrayLike = Any

#: Side of the grey signature, in pixels.
SIG_PX = 32
#: Side of the block of lowest spatial frequencies in a signature's shift-invariant descriptor.
SPECTRUM = 8
#: Pairs whose descriptors (``spectra``) correlate less than this are not compared further.
PREFILTER = 0.97
#: Scales tried when aligning two signatures (a crop of up to 10 % magnifies its content by 1.11).
SCALES = (1 / 1.11, 1 / 1.05, 1.0, 1.05, 1.11)

#: Magnifications under which a signature's descriptor is also taken (``zoomed_spectra``): a copy
#: cropped by 5 % shows its content that much larger, and its spectrum shrinks by as much, so the
#: plain descriptors of a crop and its original correlate too little. Measured on 300 Fashion-MNIST
#: images copied in every edit family (docs/benchmarks.md): the prefilter kept 52 % of 5 % crops and
#: 2 % of 10 % crops on the plain descriptors alone, 94 % and 8 % with 1.05 and ZOOM_MARGIN, about
#: 60 % of 10 % crops with 1.11 too (every other family 100 % either way). 1.11 once let look-alike
#: trousers of another length through as leaks (the held-back case of tests/test_twins.py); since
#: the comparison aligns crops (``twin_compare._refine``) at a blur that keeps shape, it does not.
ZOOMS = (1.05, 1.11)
#: A pair kept only through a magnified descriptor must correlate this much more than PREFILTER: a
#: look-alike of another size gains a little from magnifying, a crop a lot (median 0.971 -> 0.992
#: for 5 % crops). At 0.01, 94 % of 5 % crops pass and 0.6 % more candidate pairs; at 0.005, 97 %
#: and 5 % more, and a look-alike trouser 5 % shorter became a false leak in tests/test_twins.py
#: (before the comparison aligned crops). The default; each ``twin_compare.Comparison`` has its own:
#: one that aligns crops is sent more of them.
ZOOM_MARGIN = 0.01


def zoomed_spectra(sig: np.ndarray, zooms: tuple[float, ...] = ZOOMS, chunk: int = 16_384) -> np.ndarray:
    """(len(zooms), N, D) float16 ``spectra`` of the signatures magnified about their centre by
    each of ``zooms`` (linear interpolation): what a crop of the picture would show."""
    n = len(sig)
    side = sig.shape[1] if sig.ndim == 3 else SIG_PX
    mats = [_magnify(side, z) for z in zooms]
    width = spectra(np.zeros((1, side, side), np.uint8)).shape[1]
    out = np.empty((len(zooms), n, width), np.float16)
    for s in range(0, n, chunk):
        g = np.asarray(sig[s : s + chunk], np.float32)
        for k, m in enumerate(mats):
            out[k, s : s + len(g)] = spectra(_sandwich(m, g))
    return out


class Zoomed:
    """``zoomed_spectra`` of a set's signatures, one magnification at a time, made when asked for:
    a million images' descriptors take 240 MB a magnification, and the prefilter needs one at a time
    (``prefilter``). Indexes like the (len(ZOOMS), N, D) array it stands for."""

    def __init__(self, sig: np.ndarray) -> None:
        self.sig = sig
        self.kept: dict[int, np.ndarray] = {}  # magnifications made once and asked for again

    def __len__(self) -> int:
        return len(ZOOMS)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.kept[k] if k in self.kept else zoomed_spectra(self.sig, (ZOOMS[k],))[0]

    def keep(self, k: int) -> np.ndarray:
        """Magnification ``k``, made now and held (the twin search's crop candidates read the last
        before the prefilter does)."""
        if k not in self.kept:
            self.kept[k] = self[k]
        return self.kept[k]


def prefilter(
    low_a: np.ndarray,
    low_b: np.ndarray,
    zoom_a: np.ndarray | Zoomed,
    zoom_b: np.ndarray | Zoomed,
    a: np.ndarray,
    b: np.ndarray,
    flip: np.ndarray | None = None,
    zoom_margin: float = ZOOM_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """The prefilter's correlation of pairs (a[i] of one set, b[i] of the other): the best of the
    plain descriptors' and of either side magnified (``zoomed_spectra``, or ``Zoomed``: one
    magnification is held at a time, and one set's is made once when ``zoom_a`` is ``zoom_b``)
    against the other plain, less ``zoom_margin`` (a ``Comparison``'s: how far it aligns crops);
    with the scale that brings b onto a where that best was found (an index into SCALES, one byte
    a pair: there are tens of millions at a million images). ``flip``: pairs whose b is taken
    mirrored (``mirror_order``)."""
    corr = np.empty(len(a), np.float32)
    scale = np.full(len(a), SCALES.index(1.0), np.int8)
    order = _order_of_width(low_a.shape[1]) if flip is not None and flip.any() else None
    step = 1 << 17  # pairs a chunk: its gathered descriptors take ~250 MB, whatever the number of pairs

    def chunks() -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray | None]]:  # the mirrored rows last
        for s in range(0, len(a), step):
            fl = None if order is None or flip is None else np.flatnonzero(flip[s : s + step])
            yield slice(s, s + step), a[s : s + step], b[s : s + step], fl

    for sl, ia, ib, fl in chunks():
        corr[sl] = np.einsum("ij,ij->i", low_a[ia], _turned(low_b[ib], fl, order))
    for k, z in enumerate(ZOOMS[: len(zoom_a)]):  # one magnification at a time
        zb = zoom_b[k]
        za = zb if zoom_a is zoom_b else zoom_a[k]
        for sl, ia, ib, fl in chunks():
            c, sc = corr[sl], scale[sl]
            pa, pb = low_a[ia], _turned(low_b[ib], fl, order)
            for cz, how in (
                (np.einsum("ij,ij->i", za[ia].astype(np.float32), pb), SCALES.index(1 / z)),  # b: a magnified
                (np.einsum("ij,ij->i", pa, _turned(zb[ib].astype(np.float32), fl, order)), SCALES.index(z)),  # a: b
            ):
                cz -= zoom_margin
                better = cz > c
                c[better], sc[better] = cz[better], how
        del za, zb
    return corr, scale


def _turned(desc: np.ndarray, rows: np.ndarray | None, order: np.ndarray | None) -> np.ndarray:
    """``desc`` (gathered descriptors, a copy) with ``rows`` mirrored by ``order``."""
    if rows is not None and order is not None and len(rows):
        desc[rows] = desc[rows][:, order]
    return desc


@functools.cache
def _order_of_width(width: int) -> np.ndarray:
    """``mirror_order`` of the signature side whose descriptors are ``width`` wide."""
    side = next(s for s in range(2, 4 * SPECTRUM + 2) if _width(s) == width)
    return mirror_order(side)


def _width(side: int) -> int:
    kr, kc = _bands(side)
    return (2 * kr - 1) * kc


def _bands(side: int, keep: int = SPECTRUM) -> tuple[int, int]:
    """(vertical, horizontal) frequencies a descriptor keeps of a ``side``-pixel signature: ``keep``
    each, fewer on small thumbnails (both signs of the vertical one are kept: 2 x vertical - 1 rows)."""
    return min(keep, side // 2), min(keep, side // 2 + 1)


assert all(z in SCALES and 1 / z in SCALES for z in ZOOMS)  # the quick comparison aligns by them


def signatures(thumbnails: ArrayLike, side: int | None = None, chunk: int = 8_192) -> np.ndarray:
    """(N, s, s) uint8 grey signatures of (N, t, t, 3) uint8 thumbnails (an array or anything
    that slices like one): the luma, box-averaged to s = the smallest of t, SIG_PX and ``side``
    (``signature_side``: the images' own size, where thumbnails enlarge them), rounded (1 KB a
    sample at 32 px: a million take 1 GB)."""
    n = len(thumbnails)
    first = np.asarray(thumbnails[:1])
    t = first.shape[1] if n else SIG_PX
    side = min(t, SIG_PX, side or SIG_PX)
    smaller = thumbnails.at(side) if side < t and hasattr(thumbnails, "at") else None
    if smaller is not None:  # made on demand: made at the signature's side, not enlarged to be averaged back
        thumbnails = smaller
    out = np.empty((n, side, side), np.uint8)
    w = np.asarray([0.299, 0.587, 0.114], np.float32)
    # grey images made on demand at the signature's side: their one channel is the luma, the same
    # to the bit once rounded (a box average would break the ties of half a level differently)
    grey = getattr(thumbnails, "grey", None) if t == side or smaller is not None else None
    for s in range(0, n, chunk):
        one = grey(slice(s, s + chunk)) if grey is not None else None
        th = np.asarray(thumbnails[s : s + chunk]) if one is None else one
        g = th.astype(np.float32) @ w if th.ndim == 4 else th.astype(np.float32)
        out[s : s + len(g)] = np.clip(np.rint(_box(g, side)), 0, 255)
    return out


#: The smallest signature side ``signature_side`` chooses (smaller images are enlarged to it: the
#: comparison's frame and blocks, ``twin_compare._frame``, were measured down to 16 px).
MIN_SIG_PX = 16


def signature_side(native: float | None, thumbnail_px: int) -> int:
    """The signature side for images whose centre squares are ``native`` pixels a side (their
    median; None: unknown) in thumbnails of ``thumbnail_px``: the image's own side where the
    thumbnail only repeats its pixels (enlarged 2x or more, ``images.thumbnail_filter``: 16 px to
    32, each pixel 2 x 2), since such a signature holds nothing more at four times the cost of a
    comparison; SIG_PX otherwise. Measured (docs/benchmarks.md): on the alike million's 16-px
    images (compared with blurs in proportion, ``twin_compare.BLURS``) near duplicates at precision 0.987 /
    recall 0.328 against 0.922 / 0.385 at 32 px, leaks 1.000 / 0.675 against 0.978 / 0.680, the
    audit 652 -> 305 s and the dataset comparison 234 -> 167 s; on 28-px Fashion-MNIST (a bicubic
    enlargement to 32) signatures at 28 px found 17 of 25 resampled leaks where 32-px ones find 23,
    so a smooth enlargement keeps SIG_PX."""
    from ..images import thumbnail_filter

    if native is None or not np.isfinite(native) or native < 1:
        return SIG_PX
    side = int(round(native))
    if thumbnail_filter(side, thumbnail_px) != "nearest":
        return SIG_PX
    return int(min(SIG_PX, max(MIN_SIG_PX, side)))


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
    kr, kc = _bands(side, keep)
    out = np.empty((n, (2 * kr - 1) * kc), np.float32)
    for s in range(0, n, chunk):
        g = np.asarray(sig[s : s + chunk], np.float32)
        f = np.abs(_fft.rfft2(g - g.mean((1, 2), keepdims=True)))
        f = np.sqrt(np.concatenate([f[:, :kr, :kc], f[:, len(f[0]) - kr + 1 :, :kc]], 1).reshape(len(g), -1))
        f -= f.mean(1, keepdims=True)
        norm = np.linalg.norm(f, axis=1, keepdims=True)
        out[s : s + len(g)] = f / np.where(norm > 0, norm, 1)
    return out


@functools.cache
def mirror_order(side: int, keep: int = SPECTRUM) -> np.ndarray:
    """The order of a ``spectra`` descriptor's entries (signatures of ``side`` pixels) that gives the
    descriptor of the signature mirrored left to right: a horizontal flip takes each frequency
    (u, v) to (u, -v), and a real picture's magnitude there equals that at (-u, v), so the rows of
    the vertical frequency swap signs. Exact up to rounding (tests); a mirrored copy's prefilter and
    nearest signatures need no second set of descriptors."""
    kr, kc = _bands(side, keep)
    u = list(range(kr)) + list(range(-(kr - 1), 0))
    rows = np.asarray([u.index(-x) for x in u])
    return (rows[:, None] * kc + np.arange(kc)[None, :]).ravel()


def mirrored(sig: np.ndarray) -> np.ndarray:
    """Signatures mirrored left to right (a horizontally flipped copy's)."""
    return np.ascontiguousarray(np.asarray(sig)[..., ::-1])


def oriented(sig: np.ndarray, rows: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """The signatures of ``rows``, mirrored where ``flip``."""
    out = np.asarray(sig[rows])  # a copy (rows: an index array)
    if flip.any():
        out[flip] = out[flip][..., ::-1]
    return out


def _sampling(src: np.ndarray, side: int) -> np.ndarray:
    """(..., side, side) linear-interpolation matrices taking each output pixel from ``src``
    (positions, (..., side)), edges repeated."""
    lo = np.floor(src)
    w = (src - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    out = np.zeros(src.shape + (side,), np.float32)
    i0, i1 = np.clip(lo, 0, side - 1), np.clip(lo + 1, 0, side - 1)
    np.put_along_axis(out, i0[..., None], (1 - w)[..., None], axis=-1)
    both = np.take_along_axis(out, i1[..., None], axis=-1) + w[..., None]
    np.put_along_axis(out, i1[..., None], both, axis=-1)
    return out


def _magnify(side: int, z: float) -> np.ndarray:
    """(side, side) matrix that magnifies a row or column by ``z`` about its centre (linear interpolation)."""
    x = np.arange(side, dtype=np.float64)
    c = (side - 1) / 2
    return _sampling(c + (x - c) / z, side)


def _sandwich(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``m @ x[i] @ m.T`` for a stack ``x`` (B, s, s), as two products with the fixed matrix on the
    left of contiguous stacks: NumPy's ``stack @ m.T`` with the matrix on the right ran 5.7x slower
    (OpenBLAS, 2,048 signatures of 32 px: 234 ms against 41), and it was two thirds of the comparison."""
    y = np.ascontiguousarray(np.matmul(m, x).transpose(0, 2, 1))  # (m x)^T
    return np.ascontiguousarray(np.matmul(m, y).transpose(0, 2, 1))  # (m (m x)^T)^T = m x m^T


def signature_neighbours(low: np.ndarray, k: int, *, other: np.ndarray) -> np.ndarray:
    """Each row's k nearest rows of ``other`` by descriptor (inner product of ``spectra``), exactly."""
    import faiss

    index = faiss.IndexFlatIP(other.shape[1])
    index.add(np.ascontiguousarray(other, np.float32))
    return index.search(np.ascontiguousarray(low, np.float32), k)[1].astype(np.int64)


#: Candidates per listed signature for another set's images, as a multiple of k (the set's own
#: graph takes 3): measured on benchmarks/million.py's 200,000 alike images and their 20,000 compared
#: ones, recall@10 against exact search 0.895 at 3, 0.936 at 6, 0.968 at 12 (3.7 s; exact: 8 s), and
#: a leak the index missed at 3 and 6 was listed at 12.
OTHER_FACTOR = 12


class SignatureSearch:
    """The nearest signatures of one data set by descriptor (inner product of ``spectra``): exact up
    to ``APPROXIMATE_ABOVE`` images, through a ``RowIndex`` above. Made once per data set and asked
    for both its own images' nearest others (``find_twins``) and another set's images' nearest
    (``cross_twins``): at the alike million the second, done exactly, read 20,000 x 1,000,000
    descriptors (about 40 s on 2 cores), and each search built its own index before."""

    def __init__(self, sig: np.ndarray, *, seed: int) -> None:
        self.low = spectra(sig)
        self.seed = seed
        self._index: Any = None

    def _approximate(self) -> Any:
        from .neighbours import APPROXIMATE_ABOVE, RowIndex

        if len(self.low) <= APPROXIMATE_ABOVE:
            return None
        if self._index is None:
            self._index = RowIndex(self.low, metric="cosine", seed=self.seed)
        return self._index

    def own(self, k: int, *, breadth: int | None = None) -> np.ndarray:
        """(N, k) each image's k nearest other images (the graph ``build_graph`` would make, without
        measuring its recall: nothing reports it; ``breadth``: the index's search breadth, if not its own)."""
        from .neighbours import exact_graph

        index = self._approximate()
        if index is None:
            return exact_graph(self.low, k, metric="cosine").indices
        return index.graph(k).indices if breadth is None else index.graph(k, ef=breadth).indices

    def of(self, low_other: np.ndarray, k: int, *, own: bool = False, breadth: int | None = None) -> np.ndarray:
        """(M, k) the k nearest images of this set to each row of another set's ``spectra``
        (``own``: rows of this set's own, its mirrors: as few candidates as ``own`` takes, at
        ``breadth`` if given, not OTHER_FACTOR's)."""
        from .neighbours import CANDIDATE_FACTOR, SEARCH_BREADTH

        index = self._approximate()
        if index is None:
            return signature_neighbours(low_other, k, other=self.low)
        factor = CANDIDATE_FACTOR if own else OTHER_FACTOR
        return index.search(low_other, k, factor=factor, ef=breadth or SEARCH_BREADTH)[0]
