"""Reducers: embeddings -> ``PcaResult`` / 2-D ``Projection`` (PCA, openTSNE, umap-learn).

Automatic changes to the user's parameters (a perplexity too large for the data) are
recorded in ``Projection.notes`` and shown in the report, never made silently.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import ReportgenError

log = logging.getLogger(__name__)


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

    def components_for(self, share: float) -> int:
        if self.total_variance <= 0:
            return 0
        cum = np.cumsum(self.eigenvalues) / self.total_variance
        return int(min(len(cum), np.searchsorted(cum, share - 1e-12) + 1))

    @property
    def participation_ratio(self) -> float:
        ev = np.clip(self.eigenvalues, 0, None)
        s2 = float((ev**2).sum())
        return float(ev.sum() ** 2 / s2) if s2 > 0 else 0.0


@dataclass(frozen=True)
class Projection:
    method: str
    coords: np.ndarray  # (N, 2) float32
    params: dict
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    fitted: object = field(default=None, repr=False, compare=False)  # the library's fitted object, for transform()


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
    for s in range(0, n, chunk):  # summed in float64: identical samples give exactly zero variance
        mean += np.asarray(x[s : s + chunk]).sum(0, dtype=np.float64)
    mean /= n
    if d <= n:
        # centred chunks (a reused buffer) multiplied in float32 - the costly part - and summed in float64
        dt = np.float32 if f32 else np.float64
        cov = np.zeros((d, d))
        mean_c = mean.astype(dt)
        buf = np.empty((min(chunk, n), d), dt)
        prod = np.empty((d, d), dt)
        for s in range(0, n, chunk):
            b = np.asarray(x[s : s + chunk], dt)
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
        for s in range(0, n, chunk):
            np.subtract(np.asarray(x[s : s + chunk]) @ comps32, offset, out=scores[s : s + chunk])
    else:
        for s in range(0, n, chunk):
            scores[s : s + chunk] = (np.asarray(x[s : s + chunk], np.float64) - mean) @ comps.T
    ratio = evals[:k] / total if total > 0 else np.zeros(k)
    return PcaResult(mean=mean, components=comps, scores=scores, explained_variance=evals[:k], explained_variance_ratio=ratio, eigenvalues=evals, total_variance=total)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tsne_settings(n: int, params) -> tuple[str, int, str]:
    """Gradient method, threads and neighbour search chosen by N (measured, see docs/benchmarks.md).

    Barnes-Hut on one thread below 5,000 samples (fast there, and bit-reproducible); FFT on every
    core above (its result does not depend on the thread count, unlike Barnes-Hut's).
    """
    method = params.negative_gradient_method
    if method == "auto":
        method = "bh" if n < 5_000 else "fft"
    jobs = params.n_jobs
    if jobs == "auto":
        jobs = 1 if method == "bh" else _cores()
    neighbors = "exact" if n <= 5_000 else "annoy"
    return method, int(jobs), neighbors


def run_tsne(x: np.ndarray, params, *, seed: int) -> Projection:
    """openTSNE: PCA initialisation, early exaggeration, then optimisation in blocks of 50 iterations
    that stops once the KL divergence improves by less than ``params.stop_tol`` (relative) per block.
    A perplexity too large for the data is lowered, and said so."""
    try:
        from openTSNE import TSNEEmbedding, affinity, initialization
    except ImportError:
        raise ReportgenError("reducer tsne needs openTSNE; pip install openTSNE") from None
    t0 = time.perf_counter()
    n = len(x)
    notes = []
    if n < 5:
        raise ReportgenError(f"t-SNE needs at least 5 samples, got {n}; remove the tsne reducer")
    perplexity = float(params.perplexity)
    max_perp = max(1.0, (n - 1) / 3.0 - 1.0)
    if perplexity > max_perp:
        notes.append(f"perplexity lowered from {params.perplexity:g} to {max_perp:.3g}: t-SNE needs perplexity < (N-1)/3 with N = {n}")
        perplexity = max_perp
    method, jobs, neighbors = tsne_settings(n, params)
    if method == "bh" and jobs > 1:
        notes.append("Barnes-Hut t-SNE on several threads is not bit-reproducible: maps may differ slightly between runs")
    data = np.ascontiguousarray(x, dtype=np.float64)
    aff = affinity.PerplexityBasedNN(data, perplexity=perplexity, metric=params.metric, method=neighbors, n_jobs=jobs, random_state=seed, verbose=False)
    init = initialization.pca(data, random_state=seed, verbose=False)
    lr = max(200.0, n / 12.0) if params.learning_rate == "auto" else float(params.learning_rate)
    emb = TSNEEmbedding(init, aff, negative_gradient_method=method, n_jobs=jobs, random_state=seed, verbose=False)
    if params.early_exaggeration_iter:
        emb = emb.optimize(n_iter=params.early_exaggeration_iter, exaggeration=12, momentum=0.5, learning_rate=lr / 12 if params.learning_rate == "auto" else lr)
    done, kl_prev = 0, None
    while done < params.n_iter:
        step = min(50, params.n_iter - done)
        emb = emb.optimize(n_iter=step, momentum=0.8, learning_rate=lr)
        done += step
        kl = float(emb.kl_divergence)
        if kl_prev is not None and params.stop_tol > 0 and (kl_prev - kl) < params.stop_tol * abs(kl_prev):
            break
        kl_prev = kl
    coords = np.asarray(emb, dtype=np.float32)
    used = {"perplexity": perplexity, "metric": params.metric, "iterations": done, "n_iter": params.n_iter, "stop_tol": params.stop_tol,
            "early_exaggeration_iter": params.early_exaggeration_iter, "learning_rate": round(lr, 3), "negative_gradient_method": method,
            "n_jobs": jobs, "neighbors": neighbors, "initialization": "pca", "kl_divergence": round(float(emb.kl_divergence), 5)}
    return Projection("tsne", coords, used, tuple(notes), time.perf_counter() - t0, fitted=emb)


def _neighbours_for(n: int, requested: int, what: str, *, margin: int) -> tuple[int, list[str]]:
    """The neighbour count a reducer can use with N samples, lowered (and said so) when needed."""
    if requested < n:
        return requested, []
    k = max(2, n - margin)
    return k, [f"n_neighbors lowered from {requested} to {k}: {what} needs n_neighbors < N = {n}"]


def run_umap(x: np.ndarray, params, *, seed: int, graph=None) -> Projection:
    """UMAP of x. ``graph`` (an analyse.NeighbourGraph in params.metric with >= n_neighbors - 1
    neighbours) replaces umap-learn's own neighbour search: the layer's exact graph is reused, and
    pynndescent's numba kernels are never compiled. Below 4,096 samples umap-learn would compute all
    pairwise distances instead (its "small data" path, ~2.5x slower here and with kernels of its own
    to compile); ``force_approximation_algorithm`` makes it take the given graph there too, which
    is exact, so nothing is approximated. A reducer fitted with a graph cannot ``transform`` new
    data, so comparisons pass no graph."""
    # numba compiles umap's kernels on first use (~30 s); a persistent cache under the user's cache
    # folder makes later processes skip most of it, even when site-packages is read-only
    from .store import default_cache_dir

    os.environ.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir() / "numba"))
    try:
        import umap
    except ImportError:
        raise ReportgenError("reducer umap needs umap-learn; pip install 'reportgen[umap]'") from None
    t0 = time.perf_counter()
    n = len(x)
    k, notes = _neighbours_for(n, params.n_neighbors, "UMAP", margin=1)
    if n < 4:
        raise ReportgenError(f"UMAP needs at least 4 samples, got {n}; remove the umap reducer")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is the point
        knn = None
        if graph is not None and graph.metric == params.metric and graph.indices.shape[1] >= k - 1:
            rows = np.arange(n)[:, None]  # umap-learn counts each sample as its own first neighbour
            knn = (np.hstack([rows, graph.indices[:, : k - 1]]).astype(np.int32), np.hstack([np.zeros((n, 1)), graph.distances[:, : k - 1]]).astype(np.float32))
        reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=params.min_dist, metric=params.metric, random_state=seed, init="spectral" if n > k + 1 else "random",
                            precomputed_knn=knn if knn is not None else (None, None, None), force_approximation_algorithm=knn is not None)
        coords = reducer.fit_transform(np.ascontiguousarray(x, dtype=np.float32)).astype(np.float32)
    used = {"n_neighbors": k, "min_dist": params.min_dist, "metric": params.metric,
            "neighbours": "the layer's exact graph" if knn is not None else ("all pairwise distances" if n < 4096 else "pynndescent (approximate)")}
    return Projection("umap", coords, used, tuple(notes), time.perf_counter() - t0, fitted=reducer)


def run_pacmap(x: np.ndarray, params, *, seed: int) -> Projection:
    """PaCMAP (optional extra: pip install 'reportgen[pacmap]')."""
    try:
        import pacmap
    except ImportError:
        raise ReportgenError("reducer pacmap needs the pacmap package; pip install 'reportgen[pacmap]' or remove the reducer") from None
    t0 = time.perf_counter()
    n = len(x)
    k, notes = _neighbours_for(n, params.n_neighbors, "PaCMAP", margin=2)
    reducer = pacmap.PaCMAP(n_components=2, n_neighbors=k, MN_ratio=params.MN_ratio, FP_ratio=params.FP_ratio, random_state=seed)
    coords = reducer.fit_transform(np.ascontiguousarray(x, dtype=np.float32), init="pca").astype(np.float32)
    return Projection("pacmap", coords, {"n_neighbors": k, "MN_ratio": params.MN_ratio, "FP_ratio": params.FP_ratio}, tuple(notes), time.perf_counter() - t0, fitted=reducer)


def transform_projection(fitted: Projection, pca_ref: PcaResult, x_new: np.ndarray, *, tsne_components: int = 0, seed: int = 0) -> Projection:
    """Place new samples in a reducer's fitted frame (3LC's fit-once-apply-to-others).

    PCA: the reference's mean and components; t-SNE: openTSNE's ``transform`` on the
    reference's PCA coordinates; UMAP/PaCMAP: the library's ``transform``.
    """
    t0 = time.perf_counter()
    if fitted.method == "pca":
        coords = pca_ref.transform(x_new)[:, :2].astype(np.float32)
    elif fitted.method == "tsne":
        inp = pca_ref.transform(x_new)[:, :tsne_components] if tsne_components else np.asarray(x_new, np.float64)
        coords = np.asarray(fitted.fitted.transform(np.ascontiguousarray(inp)), np.float32)
    elif fitted.method in ("umap", "pacmap"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords = np.asarray(fitted.fitted.transform(np.ascontiguousarray(x_new, dtype=np.float32)), np.float32)
    else:
        raise ReportgenError(f"reducer {fitted.method} cannot transform new samples")
    return Projection(fitted.method, coords, {**fitted.params, "fit_on": "reference"}, (), time.perf_counter() - t0)


def pca_projection(pca: PcaResult) -> Projection:
    coords = np.zeros((len(pca.scores), 2), np.float32)
    m = min(2, pca.scores.shape[1])
    coords[:, :m] = pca.scores[:, :m]
    return Projection("pca", coords, {"components": [1, 2]}, (), 0.0)
