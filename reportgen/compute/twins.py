"""Near-duplicate images ("twins"): the same picture re-encoded, brightened or darkened, or
shifted by a few pixels. Decided on the pictures, not on a model's embedding.

Why not the embedding: measured on Fashion-MNIST with the packaged EfficientNet-Lite0 (96 px,
global_pool, docs/benchmarks.md), an edited copy's cosine distance to its original (median 0.085,
90th percentile 0.17) is no smaller than an ordinary nearest neighbour's (median 0.19, 1st
percentile 0.077): 43 % of natural nearest neighbours are closer than the 90th percentile of
copies, at every layer tried. A copy keeps the picture's detail; a look-alike does not.

How: each image is reduced to a small grey signature (``SIG_PX`` square, from its thumbnail).
Two signatures are compared (``reportgen.compute.twin_compare``) after aligning the second to the
first - both blurred to their shapes (what re-encoding and resampling leave alone) or, in a set
crowded with near-identical scenes, keeping their fine detail (``twin_compare.Comparison``, chosen
by the calibration), scaled by up to 11 % (a crop of up to 10 %) and shifted by the peak of their
phase correlation, that alignment refined to any scale and sub-pixel shift, and fitted in
brightness and contrast; their
*difference* is the residual energy of the worst of a grid of blocks relative to the image's
variance (a local change - another pattern, a missing strap - shows in one block even when the
whole picture correlates well). Pairs to compare come from the layer's neighbour graph and from
the signatures' own nearest neighbours; a correlation of shift-invariant spectra (each also read
magnified by 5 and 11 %, as crops show it: ``ZOOMS``) discards the clearly different ones first,
a budget bounds the comparisons per image (``VERIFY_PER_IMAGE``, ``MAX_QUICK``, ``MAX_FULL``: the
cost grows with the number of images, not with how alike they look), a quick comparison (one
strong blur, at the scale the prefilter found) leaves the full one to the plausible pairs.

The threshold is calibrated on the data set itself (``reportgen.compute.twin_calibration``): copies
of its own images made the ways copies get made, against its ordinary look-alikes; the recall of
each edit family at the threshold is stated in the report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .twin_compare import BLOCK as BLOCK
from .twin_compare import BLURS as BLURS
from .twin_compare import COMPARISONS, Comparison
from .twin_compare import DEFAULT as DEFAULT
from .twin_compare import MAX_SHIFT as MAX_SHIFT
from .twin_compare import QUICK_BLUR as QUICK_BLUR
from .twin_compare import _frame as _frame
from .twin_compare import differences as differences
from .twin_signatures import MIN_SIG_PX as MIN_SIG_PX
from .twin_signatures import PREFILTER as PREFILTER
from .twin_signatures import SCALES as SCALES
from .twin_signatures import SIG_PX as SIG_PX
from .twin_signatures import ZOOMS as ZOOMS
from .twin_signatures import SignatureSearch as SignatureSearch
from .twin_signatures import Zoomed, oriented
from .twin_signatures import mirror_order as mirror_order
from .twin_signatures import mirrored as mirrored
from .twin_signatures import prefilter as prefilter
from .twin_signatures import signature_neighbours as signature_neighbours
from .twin_signatures import signature_side as signature_side
from .twin_signatures import signatures as signatures
from .twin_signatures import spectra as spectra
from .twin_signatures import zoomed_spectra as zoomed_spectra

#: A twin must be this much closer than the next image to either of its images (the ratio test).
RATIO = 0.65
#: Candidates of one image verified at most (its best by the prefilter): the search costs at most
#: this many comparisons an image, however alike a data set's images look; fewer above
#: MAX_QUICK / VERIFY_PER_IMAGE images, so that no search runs more than MAX_QUICK quick comparisons.
VERIFY_PER_IMAGE = 4
MAX_QUICK = 2_000_000
#: The full comparison (every scale and blur: ~850 pairs a second of 32-px signatures on a slow
#: 2-core machine, several times that of 16-px ones) runs on at most this many pairs, the most
#: alike by the quick one; the others are counted as skipped.
MAX_FULL = 200_000
#: Neighbours in the layer's graph taken as candidates (an edited copy's rank there: 90th percentile 4).
TWIN_GRAPH_NEIGHBOURS = 10
#: Nearest neighbours by signature added to the layer graph's candidates.
SIG_NEIGHBOURS = 10
#: Above SIG_NEIGHBOURS_ABOVE images, SIG_NEIGHBOURS_LARGE of them, found at an HNSW search breadth
#: of SIG_BREADTH_LARGE (the index's own, 64, below): there the verification budget (MAX_QUICK) lets
#: 2-4 candidates an image through anyway. Measured on benchmarks/million.py's 200,000 alike images with the layer
#: graph's candidates: 59 of the 184 planted near copies found with 10 at 64 and with 5 at 32, the
#: signature graph 11.3 -> 6.5 s and the rest of the search 16.8 -> 14.8 s.
SIG_NEIGHBOURS_ABOVE = 200_000
SIG_NEIGHBOURS_LARGE = 5
SIG_BREADTH_LARGE = 32
#: Crops are sought (each image's nearest to its descriptor magnified as a 10 % crop shows it) where
#: the calibration finds at least this share of the set's CROP_FAMILY copies within the threshold,
#: and up to SIG_NEIGHBOURS_ABOVE images. Measured (docs/benchmarks.md): at 10,000 Fashion-MNIST
#: images 10 % crops 6 -> 7 of 7, the search 4.0 -> 5.2 s, no other pair found or lost; at 200,000
#: alike 16-px images, where the calibration finds 1 % of crops, the search took 40.5 -> 62.9 s and
#: found no crop.
CROP_FAMILY = "cropped 10 %"
CROP_RECALL = 0.5


@dataclass(frozen=True)
class Calibration:
    """How near two images must be to be twins, measured on the data set's own images
    (``reportgen.compute.twin_calibration``)."""

    threshold: float
    copies: int  # edited copies measured
    quantile_value: float  # the copies' quantile the threshold started from
    how: str  # in words, for the report
    recall: dict[str, float] = field(default_factory=dict)  # edit family -> share of its copies within the threshold
    look_alike: bool = False  # ordinary look-alikes fall within the copies' range: copies cannot all be told apart
    impostor_quantile: float = float("nan")  # the look-alikes' quantile that capped the threshold
    mirrors: bool = False  # mirrored pictures count as copies (each pair compared both ways)
    comparison: str = DEFAULT.name  # the one of ``twin_compare.COMPARISONS`` this set's copies stand out at

    @property
    def compare(self) -> Comparison:
        return COMPARISONS[self.comparison]

    @property
    def finds_crops(self) -> bool:
        """Whether this set's crops stand out from its look-alikes enough to be sought (CROP_RECALL)."""
        return self.recall.get(CROP_FAMILY, 0.0) >= CROP_RECALL


@dataclass(frozen=True, eq=False)
class TwinData:
    """What twin search needs of one data set: its signatures, its calibrated threshold, and (made
    on first use, then shared by the audit and the dataset comparison) their nearest-signature search."""

    signatures: np.ndarray  # (N, s, s) uint8
    calibration: Calibration
    seed: int = 0

    @functools.cached_property
    def search(self) -> SignatureSearch:
        return SignatureSearch(self.signatures, seed=self.seed)


@dataclass
class Budget:
    """What the verification did, and what its budget left out (stated in the report)."""

    candidates: int = 0  # pairs proposed (neighbour graph and signatures)
    prefiltered: int = 0  # left after the spectral prefilter
    skipped: int = 0  # left out by the per-image budget
    verified: int = 0  # fully aligned and compared
    magnified: int = 0  # images whose descriptor magnified as a 10 % crop shows it was searched too


def _candidates(indices: np.ndarray, k: int) -> np.ndarray:
    """(P, 2) pairs i < j from the first k columns of a neighbour index array, unique."""
    n = len(indices)
    k = min(k, indices.shape[1])
    a = np.repeat(np.arange(n), k)
    b = indices[:, :k].ravel()
    keep = (b >= 0) & (a != b)
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return _unique(lo * n + hi)


def _unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of integer keys, by a sort: NumPy 2.4's ``np.unique`` hashes, and took 8 s for
    10 M distinct int64 keys on 2 cores where sorting and dropping repeats takes 0.3 s (a million
    images' candidate pairs: tens of millions of keys, 25 s of the audit's 300)."""
    s = np.sort(keys)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def find_twins(
    sig: np.ndarray,
    graph_indices: np.ndarray | None,
    k: int,
    threshold: float,
    *,
    seed: int,
    exclude_identical: np.ndarray | None = None,
    budget: Budget | None = None,
    search: SignatureSearch | None = None,
    mirrors: bool = False,
    crops: bool = False,
    compare: Comparison,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of one data set whose difference is at most ``threshold``, with their
    differences and whether j is i mirrored, most alike first. Candidates: the first ``k``
    neighbours of the layer graph and SIG_NEIGHBOURS nearest signatures (``search``: the set's own,
    where it is kept; else made here), and with ``crops`` (``Calibration.finds_crops``), up to
    SIG_NEIGHBOURS_ABOVE images, the nearest to each image's descriptor magnified by ZOOMS[-1] (a
    crop of up to 10 %: by plain descriptor its original can rank thousands deep, by the original's
    magnified one first). ``exclude_identical``: (N, 16)
    content hashes; pairs with equal hashes (exact duplicates) are left out. ``mirrors``: a
    horizontally flipped picture is a copy too - each of the layer graph's pairs is also compared
    with one side mirrored, and each image's nearest signatures to its mirror are candidates (an
    image is never its own mirror's copy).
    ``compare``: how two pictures are compared (``Calibration.compare``)."""
    n = len(sig)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, bool)
    search = search if search is not None else SignatureSearch(sig, seed=seed)
    low = search.low
    large = n > SIG_NEIGHBOURS_ABOVE
    k_sig = SIG_NEIGHBOURS_LARGE if large else SIG_NEIGHBOURS
    k_sig = min(k_sig, n - 1)
    graph = None if graph_indices is None else _candidates(graph_indices, k)
    own_breadth = SIG_BREADTH_LARGE if large else None
    own = search.own(k_sig, breadth=own_breadth)
    lists = [_candidates(own, k_sig)] + ([] if graph is None else [graph])
    del own
    zoom = Zoomed(sig)
    if crops and not large:  # each image's nearest to its own descriptor magnified as a 10 % crop shows it
        grown = search.of(zoom.keep(len(ZOOMS) - 1), k_sig + 1, own=True)  # held for the prefilter too
        lists.append(_candidates(grown, k_sig + 1))
        del grown
        if budget is not None:
            budget.magnified += n
    a, b = _pairs(lists, n, exclude_identical)
    graph = graph if mirrors else None  # asked again only for the mirrored candidates
    flip = np.zeros(len(a), bool)
    if mirrors:
        turned = search.of(low[:, mirror_order(sig.shape[1])], k_sig + 1, own=True, breadth=own_breadth)
        af, bf = _pairs([_candidates(turned, k_sig + 1)] + ([] if graph is None else [graph]), n, exclude_identical)
        a, b, flip = np.concatenate([a, af]), np.concatenate([b, bf]), np.r_[flip, np.ones(len(af), bool)]
    return _score(sig, sig, a, b, low, low, threshold, budget, symmetric=True, flip=flip, compare=compare, zoom=zoom)


def _pairs(lists: list[np.ndarray], n: int, exclude_identical: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the unique pair keys (``a * n + b``) of ``lists``, identical images left out."""
    key = _unique(np.concatenate(lists))
    del lists[:]  # tens of millions of pairs at a million images: hold each list of them once
    a, b = key // n, key % n
    del key
    if exclude_identical is not None:
        same = (exclude_identical[a] == exclude_identical[b]).all(1)
        a, b = a[~same], b[~same]
    return a, b


def _score(
    sig_a: np.ndarray,
    sig_b: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    low_a: np.ndarray,
    low_b: np.ndarray,
    threshold: float,
    budget: Budget | None = None,
    symmetric: bool = False,
    flip: np.ndarray | None = None,
    *,
    compare: Comparison,
    zoom: Zoomed | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verify candidate pairs (a[i] of sig_a, b[i] of sig_b, mirrored where ``flip``): the spectral
    prefilter, then at most VERIFY_PER_IMAGE per image of ``a`` (the best by the prefilter), a quick
    comparison (one strong blur, no scaling), and the full one where a twin is still plausible.
    Pairs within ``threshold``, most alike first, with their differences and ``flip``; a pair
    compared both ways counts once, the closer way."""
    budget = budget if budget is not None else Budget()
    budget.candidates += len(a)
    flip = np.zeros(len(a), bool) if flip is None else flip
    corr, scale = _correlate(sig_a, sig_b, low_a, low_b, a, b, flip, compare.zoom_margin, zoom)
    keep = corr >= PREFILTER
    a, b, corr, scale, flip = a[keep], b[keep], corr[keep], scale[keep], flip[keep]
    budget.prefiltered += len(a)
    order = _budget_order(a, b, corr, scale, compare.zoom_margin)
    a, b, scale, flip = a[order], b[order], scale[order], flip[order]
    rank = np.arange(len(a)) - np.searchsorted(a, a, side="left")
    images = int((rank == 0).sum())  # a is sorted: each image's first candidate has rank 0
    per = int(np.clip(MAX_QUICK // max(images, 1), 1, VERIFY_PER_IMAGE))
    within = rank < per
    budget.skipped += int((~within).sum())
    a, b, scale, flip = a[within], b[within], scale[within], flip[within]
    d = np.empty(len(a), np.float32)
    for z in np.unique(scale):  # the quick comparison at the scale the prefilter found
        at = np.flatnonzero(scale == z)
        for s in range(0, len(at), 1 << 14):
            p = at[s : s + (1 << 14)]
            d[p] = compare.glance(sig_a[a[p]], oriented(sig_b, b[p], flip[p]), SCALES[int(z)])
    plausible = np.flatnonzero(d <= compare.keep * threshold)
    if len(plausible) > MAX_FULL:
        budget.skipped += len(plausible) - MAX_FULL
        plausible = plausible[np.argsort(d[plausible], kind="stable")[:MAX_FULL]]
    budget.verified += len(plausible)
    full = np.zeros(len(a), bool)
    full[plausible] = True
    for s in range(0, len(plausible), 1 << 14):
        p = plausible[s : s + (1 << 14)]
        d[p] = compare.full(sig_a[a[p]], oriented(sig_b, b[p], flip[p]))  # the calibrated one
    if flip.any():  # a pair compared both ways: the closer way of those compared in full
        one = first_per_pair(a, b, np.lexsort((d, ~full, b, a)))
        a, b, d, full, flip = a[one], b[one], d[one], full[one], flip[one]
    # every compared pair takes part in the ratio test: the look-alikes a twin must stand out from;
    # only a pair compared in full can be a twin (the budget's skipped ones are counted, not guessed)
    hit = full & (d <= threshold) & _distinct(a, b, d, symmetric)
    a, b, d, flip = a[hit], b[hit], d[hit], flip[hit]
    order = np.lexsort((b, a, d))
    return np.stack([a[order], b[order]], 1).astype(np.int64), d[order], flip[order]


def _budget_order(a: np.ndarray, b: np.ndarray, corr: np.ndarray, scale: np.ndarray, zoom_margin: float) -> np.ndarray:
    """The order in which each image of ``a`` has its candidates verified (the budget takes the
    first): a's rows together, each image's best candidates first by what the descriptors read - a
    magnified match that a negative ``zoom_margin`` let through is not put above a plain match that
    correlates more (at 10,000 images an exact leak at 1.0 lost its place to four look-alikes of
    another size at 0.97-0.98 + 0.03)."""
    ranked = np.where(scale != SCALES.index(1.0), corr + min(0.0, zoom_margin), corr)
    return np.lexsort((b, -ranked, a))


def _correlate(
    sig_a: np.ndarray,
    sig_b: np.ndarray,
    low_a: np.ndarray,
    low_b: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    flip: np.ndarray,
    zoom_margin: float,
    zoom: Zoomed | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``prefilter`` of the pairs, each side's magnified descriptors made for the rows its pairs
    use: every row where one data set's pairs use most of them (one magnification at a time, or
    ``zoom``'s: one data set's, some already made), else only theirs."""
    if sig_b is not sig_a:  # another data set against the reference: only the rows in pairs
        la, za, pa = _in_use(sig_a, low_a, a)
        lb, zb, pb = _in_use(sig_b, low_b, b)
        return prefilter(la, lb, za, zb, pa, pb, flip, zoom_margin)
    seen = np.zeros(len(sig_a), bool)
    seen[a], seen[b] = True, True
    if 2 * int(seen.sum()) > len(sig_a):
        zoom = zoom if zoom is not None else Zoomed(sig_a)  # made once for both sides
        return prefilter(low_a, low_b, zoom, zoom, a, b, flip, zoom_margin)
    # few rows in pairs: the tiled million's exact copies left 291,294 pairs, and every row's
    # magnified descriptors took 2 x 14 s
    used = np.flatnonzero(seen)
    lu, zu = _gathered(sig_a, low_a, used)
    return prefilter(lu, lu, zu, zu, np.searchsorted(used, a), np.searchsorted(used, b), flip, zoom_margin)


def first_per_pair(a: np.ndarray, b: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first index of each (a, b) pair in ``order`` (a sort by a, then b, then what ranks a
    pair's entries): each pair once, its best entry."""
    sa, sb = a[order], b[order]
    return order[np.r_[True, (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])]]


def _in_use(sig: np.ndarray, low: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(descriptors, zoomed descriptors, positions of ``rows`` in them) of only the signatures that
    ``rows`` name: a compared set's candidates name part of the reference (20,000 compared images:
    105,127 of 200,000 reference rows on benchmarks/million.py's data; at most 220,000 of a million)."""
    used = _unique(rows)
    return *_gathered(sig, low, used), np.searchsorted(used, rows).astype(np.int64)


def _gathered(sig: np.ndarray, low: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, zoomed descriptors) of the signatures ``used`` (sorted, unique rows)."""
    from ..streaming import gather_rows

    return low[used], zoomed_spectra(gather_rows(sig, used))


def _distinct(a: np.ndarray, b: np.ndarray, d: np.ndarray, symmetric: bool) -> np.ndarray:
    """The ratio test (Lowe's, for matching): a pair is a twin only if it is clearly closer than
    the next image is to either of its images (``symmetric``: both sides are one data set; else
    the side of ``a``). A copy stands out from the look-alikes; one plain trouser among hundreds
    does not, and is not called the copy of another."""
    ids = np.concatenate([a, b]) if symmetric else a
    dd = np.concatenate([d, d]) if symmetric else d
    if not len(ids):
        return np.zeros(0, bool)
    order = np.lexsort((dd, ids))
    ids_s, dd_s = ids[order], dd[order]
    starts = np.searchsorted(ids_s, ids_s, side="left")
    nxt = np.minimum(starts + 1, len(ids_s) - 1)
    second = np.where((starts + 1 < len(ids_s)) & (ids_s[nxt] == ids_s), dd_s[nxt], np.inf)
    at = np.flatnonzero(np.r_[True, ids_s[1:] != ids_s[:-1]])  # each image's nearest (ids_s is sorted)
    uniq, runner = ids_s[at], second[at]

    def ok(x: np.ndarray) -> np.ndarray:
        return d <= RATIO * runner[np.searchsorted(uniq, x)]

    return ok(a) & ok(b) if symmetric else ok(a)


def cross_twins(
    sig_ref: np.ndarray,
    sig_other: np.ndarray,
    graph_twins: np.ndarray | None,
    threshold: float,
    *,
    seed: int,
    budget: Budget | None = None,
    search: SignatureSearch | None = None,
    mirrors: bool = False,
    crops: bool = False,
    compare: Comparison,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each row of another data set, its closest twin in the reference, if any: (rows of other,
    reference rows, differences, whether the twin is mirrored). Candidates: ``graph_twins`` ((M, k)
    reference rows nearest in the layer) and SIG_NEIGHBOURS nearest reference signatures
    (``search``: the reference's, where it is kept; else made here), and with ``crops`` the nearest
    to each row's descriptor magnified and shrunk as a 10 % crop shows it (a crop of a reference
    image, or the original of a reference crop: one search of the other set's rows each, at any
    size); ``mirrors``, ``compare``: as in ``find_twins``."""
    search = search if search is not None else SignatureSearch(sig_ref, seed=seed)
    low_ref, low_other = search.low, spectra(sig_other)
    k = min(SIG_NEIGHBOURS, len(sig_ref))
    graph = None if graph_twins is None else np.asarray(graph_twins).reshape(len(sig_other), -1)
    lists = [search.of(low_other, k)] + ([] if graph is None else [graph])
    if crops:  # a crop of a reference image, or the original of a reference crop: magnified either way
        lists += [search.of(low, k) for low in zoomed_spectra(sig_other, (1 / ZOOMS[-1], ZOOMS[-1]))]
    rows, refs = _cross_pairs(lists, len(sig_ref))
    flip = np.zeros(len(rows), bool)
    if mirrors:
        turned = search.of(low_other[:, mirror_order(sig_other.shape[1])], k)
        rf, tf = _cross_pairs([turned] + ([] if graph is None else [graph]), len(sig_ref))
        rows, refs, flip = np.concatenate([rows, rf]), np.concatenate([refs, tf]), np.r_[flip, np.ones(len(rf), bool)]
    pairs, d, flip = _score(
        sig_other, sig_ref, rows, refs, low_other, low_ref, threshold, budget, flip=flip, compare=compare
    )
    # the closest twin per row (pairs come most alike first)
    first = np.unique(pairs[:, 0], return_index=True)[1] if len(pairs) else np.zeros(0, np.int64)
    return pairs[first, 0], pairs[first, 1], d[first], flip[first]


def _cross_pairs(cand: list[np.ndarray], n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, reference rows) of the unique candidates of (M, k) arrays of reference rows."""
    c = np.concatenate(cand, 1)
    key = _unique(np.repeat(np.arange(len(c)), c.shape[1]) * n_ref + c.ravel())
    return key // n_ref, key % n_ref
