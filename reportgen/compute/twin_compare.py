"""How different two small grey signatures are (``differences``): both blurred (by a
``Comparison``: FINE keeps fine detail, COARSE compares shapes), the second aligned to the first -
scaled, shifted by the peak of their phase correlation, that alignment refined to any scale and
sub-pixel shift (COARSE) - and fitted in brightness and contrast, then the residual energy of the
worst of a grid of blocks relative to the first's variance. The near-duplicate search
(``reportgen.compute.twins``) and its calibration (``reportgen.compute.twin_calibration``), which
chooses the comparison per data set, both decide on it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft as _fft

from .twin_signatures import SCALES, SIG_PX, ZOOM_MARGIN, _magnify, _sampling, _sandwich

#: Side of the residual blocks (pixels at SIG_PX: a 4 x 4 grid inside the MAX_SHIFT border; ``_frame``).
BLOCK = 6

#: Largest shift found by phase correlation (pixels at SIG_PX: 10 % of 32 is 3.2; ``_frame``).
MAX_SHIFT = 4


def _frame(side: int) -> tuple[int, int]:
    """(largest shift, block side) for signatures of ``side`` pixels: MAX_SHIFT and BLOCK at SIG_PX,
    in proportion on a smaller signature (``thumbnail_px`` under 32), with the same 4 x 4 grid of
    blocks. At 16 px the SIG_PX frame left one block of 6 x 6 pixels, 14 % of the picture, and a
    change near an edge went unseen. Measured on 16-px signatures of the alike million's first
    300,000 images (docs/benchmarks.md; a build at the default 32-px thumbnails compares them at
    SIG_PX and is unchanged): the share of near copies within the look-alikes' threshold (their
    0.75 % quantile) 0.22 -> 0.40 with this frame (2, 3)."""
    if side >= SIG_PX:
        return MAX_SHIFT, BLOCK
    m = max(1, round(MAX_SHIFT * side / SIG_PX))
    return m, max(2, (side - 2 * m) // 4)


@dataclass(frozen=True)
class Comparison:
    """How two signatures are compared: the full comparison's Gaussian ``blurs`` (sigma in pixels
    at SIG_PX, on (a, b); a smaller signature is blurred in proportion, as its frame is), its
    ``steps`` of refinement (``_refine``), and the quick comparison before it - one blur on both
    sides (``quick``), one scale, no refinement - that sends the pairs within ``keep`` x the
    threshold on to the full one. ``edge``: where b is read nearer its border than
    this many of its blur's sigmas, the frame is not compared (``_in_view``; 0: all of it)."""

    name: str
    blurs: tuple
    quick: tuple
    steps: int
    keep: float
    edge: float = 0.0
    zoom_margin: float = ZOOM_MARGIN

    def full(self, sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
        """``differences`` of each pair, the full comparison (every scale and blur)."""
        return differences(sig_a, sig_b, blurs=self.blurs, steps=self.steps, edge=self.edge)

    def glance(self, sig_a: np.ndarray, sig_b: np.ndarray, scale: float) -> np.ndarray:
        """``differences`` of each pair, the quick comparison at one ``scale``."""
        return differences(sig_a, sig_b, blurs=self.quick, scales=(scale,), steps=0, edge=self.edge)


#: The comparisons a data set's calibration chooses between (``twin_calibration``).
#: FINE keeps the picture's fine detail: it tells near-identical scenes apart by their sensor noise
#: (the alike million's smooth 16-px pictures: at COARSE, 12 of its first 200,000 images paired
#: with a look-alike that differs by noise alone, precision 0.857 against 0.967), but a copy that
#: lost its fine detail to re-encoding or resampling differs there as much as a look-alike does.
#: COARSE compares shapes - what tells two look-alikes apart where pictures carry real detail - and
#: refines the alignment to any scale and sub-pixel shift (crops magnify by any amount between the
#: grid's scales). Measured on the 10,000 Fashion-MNIST images of benchmarks/findings.py (86
#: planted near copies, the calibration run on each, docs/benchmarks.md): FINE found 68 pairs at
#: precision 0.926, recall 0.733; one blur of 1.1 px 0.907 / 0.791, 1.45 0.938 / 0.872, 1.6 0.948 /
#: 0.849, 2.0 0.959 / 0.826; 1.6 with the refinement and ``keep`` 12 (the quick comparison does
#: not align crops: at 3 x, 5 of the 14 crops the full one finds were dropped) 85 at 0.929 / 0.919.
#: 10 % crops were still found 1 in 7: a crop shows nothing past its border, near which its blur
#: saw less than the original's did, and where a garment reaches the frame that part read as
#: different (4 of 7 at 2.8-9.4 x the threshold). COARSE leaves it out (``edge``: 2 sigmas; the same
#: crops 0.13-0.74 x, the look-alikes' 5th percentile 0.0184 -> 0.0179), and its prefilter passes
#: pairs a magnified descriptor correlates 0.03 less (``zoom_margin``; crops' best there: 0.94-0.99):
#: 90 pairs at 0.933 / 0.977, 10 % crops 6 of 7, 27,618 pairs prefiltered (2,996 before) and 7,862
#: compared in full (1,841), the search 1.8 -> 4 s. FINE aligns no crops: it is sent none more.
FINE = Comparison("fine", ((0.6, 0.6), (0.6, 1.1), (1.1, 0.6)), ((1.1, 1.1),), 0, 3.0)
COARSE = Comparison("coarse", ((1.6, 1.6),), ((2.2, 2.2),), 3, 12.0, edge=2.0, zoom_margin=-0.03)
COMPARISONS = {c.name: c for c in (FINE, COARSE)}
#: Where no calibration chose.
DEFAULT = COARSE
BLURS = DEFAULT.blurs
QUICK_BLUR = DEFAULT.quick


@functools.cache
def _blur_zoom(side: int, sigma: float) -> dict[float, np.ndarray]:
    """For each scale: the matrix that blurs (Gaussian ``sigma``) then magnifies about the centre."""
    x = np.arange(side)
    g = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
    g = (g / g.sum(1, keepdims=True)).astype(np.float32)
    return {s: _magnify(side, s) @ g for s in SCALES}


def _peak(corr: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The best shift (within MAX_SHIFT) of a circular cross-correlation, with a parabolic
    sub-pixel refinement: (dy, dx) in pixels."""
    n, m = len(corr), _frame(side)[0]
    sh = np.r_[0 : m + 1, side - m : side]
    k = corr[:, sh][:, :, sh].reshape(n, -1).argmax(1)
    py, px = sh[k // len(sh)], sh[k % len(sh)]
    r = np.arange(n)

    def frac(lo: np.ndarray, mid: np.ndarray, hi: np.ndarray) -> np.ndarray:
        den = lo - 2 * mid + hi
        return np.clip(np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, -1), 0.0), -0.5, 0.5)

    fy = frac(corr[r, (py - 1) % side, px], corr[r, py, px], corr[r, (py + 1) % side, px])
    fx = frac(corr[r, py, (px - 1) % side], corr[r, py, px], corr[r, py, (px + 1) % side])
    return np.where(py > side // 2, py - side, py) + fy, np.where(px > side // 2, px - side, px) + fx


def _blocks(
    a_c: np.ndarray,
    moved: np.ndarray,
    var_a: np.ndarray,
    nb: int,
    block: int,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The difference of a's frame (centred) and b's moved into it: b fitted in brightness and
    contrast (least squares), then the largest residual energy of the grid of blocks over a's variance.
    ``seen``: (rows, columns) of the frame that b shows (``_in_view``); a pair with any outside is
    fitted and measured on the rest (a block of which under a quarter is seen does not count)."""
    if seen is not None:
        wy, wx = seen
        cut = ~(wy.all(1) & wx.all(1))
        if cut.any():
            full = np.empty(len(a_c), np.float32)
            full[~cut] = _blocks(a_c[~cut], moved[~cut], var_a[~cut], nb, block)
            full[cut] = _seen_blocks(a_c[cut], moved[cut], var_a[cut], nb, block, wy[cut], wx[cut])
            return full
    b_c = moved - moved.mean((1, 2), keepdims=True)
    var_b = (b_c**2).mean((1, 2))
    alpha = (a_c * b_c).mean((1, 2)) / np.where(var_b > 0, var_b, 1)
    res = a_c - alpha[:, None, None] * b_c
    return (res**2).reshape(len(a_c), nb, block, nb, block).mean((2, 4)).max((1, 2)) / var_a


def _seen_blocks(
    a_c: np.ndarray, moved: np.ndarray, var_a: np.ndarray, nb: int, block: int, wy: np.ndarray, wx: np.ndarray
) -> np.ndarray:
    """``_blocks`` weighted by what b shows (``wy`` x ``wx``, 0 or 1)."""
    n = len(a_c)
    w = (wy[:, :, None] * wx[:, None, :]).astype(np.float32)
    sw = np.maximum(w.sum((1, 2)), 1.0)[:, None, None]
    a_m = a_c - (w * a_c).sum((1, 2))[:, None, None] / sw
    b_m = moved - (w * moved).sum((1, 2))[:, None, None] / sw
    var_b = (w * b_m**2).sum((1, 2))
    alpha = (w * a_m * b_m).sum((1, 2)) / np.where(var_b > 0, var_b, 1)
    res = w * (a_m - alpha[:, None, None] * b_m) ** 2
    energy = res.reshape(n, nb, block, nb, block).sum((2, 4))
    count = w.reshape(n, nb, block, nb, block).sum((2, 4))
    per = np.where(count >= block * block / 4, energy / np.maximum(count, 1.0), -np.inf).max((1, 2))
    return np.where(np.isfinite(per), per, np.inf).astype(np.float32) / var_a


def _in_view(where: np.ndarray, side: int, edge: float) -> np.ndarray:
    """(n, w) whether each frame row (or column), read from b at ``where`` (b's pixels), lies at
    least ``edge`` pixels inside b: nearer its border b's blur saw less of the picture than a's did
    at the same place, and past it a crop of b shows nothing of what a shows there."""
    return (where >= edge) & (where <= side - 1 - edge)


def _aligned(
    a: np.ndarray, b: np.ndarray, blurs: tuple, scales: tuple[float, ...], steps: int, edge: float = 0.0
) -> np.ndarray:
    """The smallest difference of each pair over every (blur, scale) alignment, each pair's best then
    refined by ``steps`` Gauss-Newton steps (``_refine``). What several alignments share is made
    once: a's blurred signature and spectrum per blur of a, b's blurred and scaled one per (blur of
    b, scale); b's is used by every alignment that needs it, then freed. b is moved only where the
    blocks are measured (the frame inside the largest shift). 2,048 pairs of upscaled digits at
    32 px: 3.8 -> 2.4 s; the alike benchmark's images 1.22 -> 0.98 ms a pair (15 alignments, before
    the refinement)."""
    side = a.shape[1]
    m, block = _frame(side)
    k = min(1.0, side / SIG_PX)  # blurs in proportion to the picture, as the frame (``BLURS``)
    w = ((side - 2 * m) // block) * block
    nb = w // block
    inner = np.arange(m, m + w, dtype=np.float64)
    c = (side - 1) / 2
    made_a: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for sa in dict.fromkeys(sa for sa, _ in blurs):
        big_a = _sandwich(_blur_zoom(side, k * sa)[1.0], a)
        fa = _fft.rfft2(big_a - big_a.mean((1, 2), keepdims=True))
        a_in = big_a[:, m : m + w, m : m + w]
        a_c = a_in - a_in.mean((1, 2), keepdims=True)
        var_a = (a_c**2).mean((1, 2)) + 1.0  # + 1 grey level^2: flat images compare by their noise, not 0/0
        made_a[sa] = fa, a_c, var_a
    best = np.full(len(a), np.inf, np.float32)
    at = np.zeros((len(a), 4))  # the best alignment: blur pair, scale, dy, dx
    for sb in dict.fromkeys(sb for _, sb in blurs):
        for scale in scales:
            big_b = _sandwich(_blur_zoom(side, k * sb)[scale], b)
            conj_fb = np.conj(_fft.rfft2(big_b - big_b.mean((1, 2), keepdims=True)))
            for j in [j for j, (_, s) in enumerate(blurs) if s == sb]:
                fa, a_c, var_a = made_a[blurs[j][0]]
                dy, dx = _peak(_fft.irfft2(fa * conj_fb, s=(side, side)), side)
                ry, rx = _sampling(inner[None, :] - dy[:, None], side), _sampling(inner[None, :] - dx[:, None], side)
                moved = ry @ big_b @ np.transpose(rx, (0, 2, 1))  # (n, w, w): the frame b is compared in
                seen = None
                if edge:
                    e = edge * k * sb  # pixels of b
                    seen = (
                        _in_view(c + (inner[None, :] - dy[:, None] - c) / scale, side, e),
                        _in_view(c + (inner[None, :] - dx[:, None] - c) / scale, side, e),
                    )
                d = _blocks(a_c, moved, var_a, nb, block, seen)
                better = d < best
                best[better], at[better] = d[better], np.c_[np.full(len(a), j), np.full(len(a), scale), dy, dx][better]
    for j in range(len(blurs)) if steps else ():
        rows = np.flatnonzero(at[:, 0] == j)
        if len(rows):
            _, a_c, var_a = made_a[blurs[j][0]]
            gb = _sandwich(_blur_zoom(side, k * blurs[j][1])[1.0], b[rows])
            e = edge * k * blurs[j][1]
            d = _refine(a_c[rows], var_a[rows], gb, at[rows, 1:], inner, steps, (m, nb, block), e)
            best[rows] = np.minimum(best[rows], d)
    return best


def _refine(
    a_c: np.ndarray,
    var_a: np.ndarray,
    gb: np.ndarray,
    start: np.ndarray,
    inner: np.ndarray,
    steps: int,
    frame: tuple,
    edge: float = 0.0,
) -> np.ndarray:
    """The difference after ``steps`` Gauss-Newton steps on each pair's (scale, dy, dx), from
    ``start`` (the grid's best), minimising the residual energy over the frame: b (blurred, not
    scaled: ``gb``) is sampled once, at ``c + (inner - shift - c) / scale``, and its derivatives by the
    three parameters come from its gradient sampled there. The grid's scales are 5 % apart and a
    crop magnifies by any amount in between: measured on 40 Fashion-MNIST images cropped by 5 %,
    aligned by brute force (scales 1 % apart, shifts of 0.25 px), their differences' median fell
    from 0.0078 to 0.0031 (JPEG 50 copies: 0.0008 either way), and 40 ordinary look-alikes' stayed
    where they were (median ratio 0.99): a copy aligns, a look-alike does not."""
    m, nb, block = frame
    side = gb.shape[1]
    c = (side - 1) / 2
    gy, gx = np.zeros_like(gb), np.zeros_like(gb)
    gy[:, 1:-1] = (gb[:, 2:] - gb[:, :-2]) / 2
    gx[:, :, 1:-1] = (gb[:, :, 2:] - gb[:, :, :-2]) / 2
    scale, dy, dx = (start[:, i].copy() for i in range(3))
    out = np.full(len(gb), np.inf, np.float32)
    for step in range(steps + 1):
        # (n, w): where each frame row and column is read, from the centre
        uy = (inner[None, :] - dy[:, None] - c) / scale[:, None]
        ux = (inner[None, :] - dx[:, None] - c) / scale[:, None]
        ry, rxt = _sampling(c + uy, side), np.transpose(_sampling(c + ux, side), (0, 2, 1))
        moved = ry @ gb @ rxt
        seen = (_in_view(c + uy, side, edge), _in_view(c + ux, side, edge)) if edge else None
        out = np.minimum(out, _blocks(a_c, moved, var_a, nb, block, seen))
        if step == steps:
            break
        wy, wx = ry @ gy @ rxt, ry @ gx @ rxt  # b's gradient where it is read
        inv = (1 / scale)[:, None, None]
        jac = np.stack([-(wy * uy[:, :, None] + wx * ux[:, None, :]) * inv, -wy * inv, -wx * inv, moved], 1)
        x = (jac - jac.mean((2, 3), keepdims=True)).reshape(len(gb), 4, -1)  # columns: d/dscale, d/ddy, d/ddx, b
        gram = x @ np.transpose(x, (0, 2, 1)) + 1e-6 * np.eye(4)
        beta = np.linalg.solve(gram, (x @ a_c.reshape(len(gb), -1, 1)))[:, :, 0]
        alpha = beta[:, 3]
        ok = alpha > 0.05  # b is fitted as a copy of a (a look-alike that anti-correlates stays put)
        move = np.where(ok[:, None], beta[:, :3] / np.where(ok, alpha, 1)[:, None], 0.0)
        scale = np.clip(scale + np.clip(move[:, 0], -0.02, 0.02), SCALES[0] / 1.03, SCALES[-1] * 1.03)
        dy = np.clip(dy + np.clip(move[:, 1], -0.5, 0.5), -m - 1, m + 1)
        dx = np.clip(dx + np.clip(move[:, 2], -0.5, 0.5), -m - 1, m + 1)
    return out


def differences(
    sig_a: np.ndarray,
    sig_b: np.ndarray,
    chunk: int = 2048,
    blurs: tuple = BLURS,
    scales: tuple = SCALES,
    steps: int = DEFAULT.steps,
    edge: float = DEFAULT.edge,
) -> np.ndarray:
    """Difference of each pair of signatures (row i of ``sig_a`` with row i of ``sig_b``): both
    blurred (``blurs``, pairs of sigmas for a and b: a ``Comparison``'s), b aligned to a - scaled by
    each of ``scales``, shifted by the phase correlation's peak (sub-pixel), the best alignment
    refined by ``steps`` Gauss-Newton steps - and fitted in brightness and contrast (least
    squares) - then the largest residual energy of a grid of blocks relative to a's variance (a
    local change shows in one block even when the whole picture correlates well). 0: the same picture."""
    n = len(sig_a)
    out = np.full(n, np.inf, np.float32)
    for c0 in range(0, n, chunk):
        a = np.asarray(sig_a[c0 : c0 + chunk], np.float32)
        b = np.asarray(sig_b[c0 : c0 + chunk], np.float32)
        out[c0 : c0 + len(a)] = _aligned(a, b, blurs, scales, steps, edge)
    return out
