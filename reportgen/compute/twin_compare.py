"""How different two small grey signatures are (``differences``): the second one aligned to the
first - scaled, shifted by the peak of their phase correlation, blurred as a resampled copy is,
fitted in brightness and contrast - then the residual energy of the worst of a grid of blocks
relative to the first's variance. The near-duplicate search (``reportgen.compute.twins``) and its
calibration (``reportgen.compute.twin_calibration``) both decide on it."""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as _fft

from .twin_signatures import SCALES, SIG_PX, _magnify, _sampling, _sandwich

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


#: Gaussian blurs (sigma in pixels at SIG_PX) applied to (a, b) before comparing: a light one
#: against aliasing, and a stronger one on either side for a copy that went through a resampling.
#: A smaller signature is blurred in proportion (0.3 and 0.55 px at 16 px), as its frame is: at
#: the full sigmas, 16-px signatures of the alike million smoothed away the sensor noise that
#: keeps look-alikes apart, and 0.20 % of its images had a look-alike that stood out within half
#: the threshold (0.03 % at 32 px, or at 16 px blurred in proportion; docs/benchmarks.md).
BLURS = ((0.6, 0.6), (0.6, 1.1), (1.1, 0.6))
#: The quick comparison's one blur, on both sides: stronger than any of BLURS, so that a resampled
#: or slightly cropped copy (which only the full comparison's scales and blurs align) still comes
#: within REFINE x the threshold. Measured on 10,000 Fashion-MNIST images with 20 copies of each
#: edit family: with BLURS[0] the quick stage dropped 22 of the 237 copies the full comparison
#: finds (crops 5 and 10 %, bilinear 1.07x), with this one 8; it sends 0.68 of the prefiltered pairs
#: to the full comparison instead of 0.36 (MAX_FULL still bounds them).
QUICK_BLUR = ((1.1, 1.1),)


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


def _aligned(a: np.ndarray, b: np.ndarray, blurs: tuple, scales: tuple[float, ...]) -> np.ndarray:
    """The smallest difference of each pair over every (blur, scale) alignment. What several
    alignments share is made once: a's blurred signature and spectrum per blur of a, b's blurred and
    scaled one per (blur of b, scale) - BLURS repeat 0.6 on either side, so 15 alignments need 2 of
    a and 10 of b, not 15 of each; b's is used by every alignment that needs it, then freed. b is
    moved only where the blocks are measured (the frame inside the largest shift). 2,048 pairs of
    upscaled digits at 32 px: 3.8 -> 2.4 s; the alike benchmark's images 1.22 -> 0.98 ms a pair."""
    side = a.shape[1]
    m, block = _frame(side)
    k = min(1.0, side / SIG_PX)  # blurs in proportion to the picture, as the frame (``BLURS``)
    w = ((side - 2 * m) // block) * block
    nb = w // block
    inner = np.arange(m, m + w, dtype=np.float64)
    made_a: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for sa in dict.fromkeys(sa for sa, _ in blurs):
        big_a = _sandwich(_blur_zoom(side, k * sa)[1.0], a)
        fa = _fft.rfft2(big_a - big_a.mean((1, 2), keepdims=True))
        a_in = big_a[:, m : m + w, m : m + w]
        a_c = a_in - a_in.mean((1, 2), keepdims=True)
        var_a = (a_c**2).mean((1, 2)) + 1.0  # + 1 grey level^2: flat images compare by their noise, not 0/0
        made_a[sa] = fa, a_c, var_a
    best = np.full(len(a), np.inf, np.float32)
    for sb in dict.fromkeys(sb for _, sb in blurs):
        for scale in scales:
            big_b = _sandwich(_blur_zoom(side, k * sb)[scale], b)
            conj_fb = np.conj(_fft.rfft2(big_b - big_b.mean((1, 2), keepdims=True)))
            for sa in [sa for sa, s in blurs if s == sb]:
                fa, a_c, var_a = made_a[sa]
                dy, dx = _peak(_fft.irfft2(fa * conj_fb, s=(side, side)), side)
                ry, rx = _sampling(inner[None, :] - dy[:, None], side), _sampling(inner[None, :] - dx[:, None], side)
                moved = ry @ big_b @ np.transpose(rx, (0, 2, 1))  # (n, w, w): the frame b is compared in
                b_c = moved - moved.mean((1, 2), keepdims=True)
                var_b = (b_c**2).mean((1, 2))
                alpha = (a_c * b_c).mean((1, 2)) / np.where(var_b > 0, var_b, 1)
                res = a_c - alpha[:, None, None] * b_c
                blocks = (res**2).reshape(len(a), nb, block, nb, block).mean((2, 4)).max((1, 2))
                np.minimum(best, blocks / var_a, out=best)
    return best


def differences(
    sig_a: np.ndarray, sig_b: np.ndarray, chunk: int = 2048, blurs: tuple = BLURS, scales: tuple = SCALES
) -> np.ndarray:
    """Difference of each pair of signatures (row i of ``sig_a`` with row i of ``sig_b``): b
    aligned to a - scaled by up to 11 %, shifted by the phase correlation's peak (sub-pixel),
    blurred on either side as a resampled copy is, and fitted in brightness and contrast (least
    squares) - then the largest residual energy of a grid of blocks relative to a's variance (a
    local change shows in one block even when the whole picture correlates well). 0: the same picture."""
    n = len(sig_a)
    out = np.full(n, np.inf, np.float32)
    for c0 in range(0, n, chunk):
        a = np.asarray(sig_a[c0 : c0 + chunk], np.float32)
        b = np.asarray(sig_b[c0 : c0 + chunk], np.float32)
        out[c0 : c0 + len(a)] = _aligned(a, b, blurs, scales)
    return out
