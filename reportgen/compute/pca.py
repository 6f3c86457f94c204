"""PCA: mean-centred principal components by an eigendecomposition of the covariance, streamed.

Exact (not randomised): the covariance is summed chunk by chunk, so a memory-mapped (N, d) array is
never copied whole; one Householder tridiagonalisation gives the whole spectrum and the top vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ReportgenError
from ..streaming import row_chunks


@dataclass(frozen=True)
class PcaResult:
    """Mean-centred PCA. ``scores`` (N, k); ``eigenvalues`` the whole spectrum (descending)."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), unit rows
    scores: np.ndarray  # (N, k)
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)
    eigenvalues: np.ndarray  # full spectrum, descending
    total_variance: float

    @property
    def k(self) -> int:
        return len(self.explained_variance)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) @ self.components.T


def _spectrum_and_top(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All eigenvalues (descending) and the top-k eigenvectors (columns, descending) of a symmetric matrix.

    One Householder tridiagonalisation serves both (``eigvalsh`` + ``eigh(subset)`` would do it twice):
    the tridiagonal spectrum costs O(d^2), and only k vectors are carried back through the reflectors.
    """
    from scipy.linalg import eigh_tridiagonal, lapack

    d = cov.shape[0]
    if d < 3:
        evals, vecs = np.linalg.eigh(cov)
        return evals[::-1], vecs[:, ::-1][:, :k]
    lwork = int(lapack.dsytrd_lwork(d, lower=1)[0])
    refl, diag, off, tau, info = lapack.dsytrd(cov, lower=1, lwork=lwork)
    if info != 0:  # pragma: no cover - LAPACK argument errors only
        raise ReportgenError(f"PCA: LAPACK dsytrd failed (info={info})")
    evals = eigh_tridiagonal(diag, off, eigvals_only=True)[::-1]
    _, z = eigh_tridiagonal(diag, off, select="i", select_range=(d - k, d - 1))
    if not np.allclose(z.T @ z, np.eye(k), atol=1e-8):  # inverse iteration can fail on degenerate spectra
        from scipy.linalg import eigh

        _, vecs = eigh(cov, subset_by_index=[d - k, d - 1])
        return evals, vecs[:, ::-1]
    # eigenvectors of cov = Q z with Q = H(0) H(1) ... H(d-2), H(i) = I - tau_i v_i v_i^T,
    # v_i = (0 .. 0, 1, refl[i+2:, i]) starting at row i+1 (LAPACK's lower storage)
    for i in range(d - 2, -1, -1):
        if tau[i] == 0:
            continue
        v = refl[i + 1 :, i].copy()
        v[0] = 1.0
        z[i + 1 :] -= np.outer(tau[i] * v, v @ z[i + 1 :])
    return evals, z[:, ::-1]


def fit_pca(x: np.ndarray, n_components: int, *, chunk: int = 16384) -> PcaResult:
    """PCA by eigendecomposition of the covariance (d <= n) or Gram matrix (d > n), in float64.

    Streams over row chunks so a memory-mapped (N, d) array is never copied whole.
    Signs are fixed so the largest-magnitude loading of each component is positive.
    """
    n, d = x.shape
    if n < 2:
        raise ReportgenError("PCA needs at least 2 samples")
    k = int(min(n_components, d, n - 1))
    f32 = x.dtype == np.float32
    mean = np.zeros(d)
    for _, c in row_chunks(x, chunk):  # summed in float64: identical samples give exactly zero variance
        mean += np.asarray(c).sum(0, dtype=np.float64)
    mean /= n
    if d <= n:
        # centred chunks (a reused buffer) multiplied in float32 - the costly part - and summed in float64
        dt = np.float32 if f32 else np.float64
        cov = np.zeros((d, d))
        mean_c = mean.astype(dt)
        buf = np.empty((min(chunk, n), d), dt)
        prod = np.empty((d, d), dt)
        for _, c in row_chunks(x, chunk):
            b = np.asarray(c, dt)
            bc = buf[: len(b)]
            np.subtract(b, mean_c, out=bc)
            np.matmul(bc.T, bc, out=prod)
            cov += prod
        del buf, prod
        cov /= n - 1
        evals, top_vecs = _spectrum_and_top(cov, k)
        comps = top_vecs.T
    else:
        xc = np.asarray(x, np.float64) - mean
        gram = xc @ xc.T / (n - 1)
        evals, u = np.linalg.eigh(gram)
        order = np.argsort(evals)[::-1]
        evals, u = evals[order], u[:, order]
        top = np.clip(evals[:k], 1e-300, None)
        comps = (xc.T @ u[:, :k] / np.sqrt(top * (n - 1))).T
    evals = np.clip(evals, 0, None)
    total = float(evals.sum())
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1
    comps = comps * signs[:, None]
    scores = np.empty((n, k))
    if f32:  # (x - mean) W = x W - mean W: no centred copy of the data
        comps32 = comps.T.astype(np.float32)
        offset = mean @ comps.T
        for s, c in row_chunks(x, chunk):
            np.subtract(np.asarray(c) @ comps32, offset, out=scores[s : s + len(c)])
    else:
        for s, c in row_chunks(x, chunk):
            scores[s : s + len(c)] = (np.asarray(c, np.float64) - mean) @ comps.T
    ratio = evals[:k] / total if total > 0 else np.zeros(k)
    return PcaResult(
        mean=mean,
        components=comps,
        scores=scores,
        explained_variance=evals[:k],
        explained_variance_ratio=ratio,
        eigenvalues=evals,
        total_variance=total,
    )
