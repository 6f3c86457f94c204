"""t-SNE map (openTSNE): PCA initialisation, early exaggeration, then a KL stopping rule.

The settings were chosen by measurement (docs/benchmarks.md): Barnes-Hut on one thread below
5,000 samples (fast there, and bit-reproducible), FFT on every core above; the 3 x perplexity
neighbours searched exactly up to 200,000 samples (blocked GEMMs, 4x faster than annoy at 100,000),
by openTSNE's annoy index above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ..errors import ReportgenError
from ..machine import cores
from .base import FittedMap, Reducer, ReducerParams

if TYPE_CHECKING:
    from ..compute.neighbours import NeighbourGraph
    from ..compute.pca import PcaResult


class TsneParams(ReducerParams):
    """openTSNE parameters (same names as ``openTSNE.TSNE``)."""

    method: Literal["tsne"] = "tsne"
    perplexity: float = Field(30.0, gt=0)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    n_iter: int = Field(750, gt=0, le=10_000, description="Most iterations after early exaggeration.")
    stop_tol: float = Field(
        0.02,
        ge=0,
        description=(
            "Stop when a block of 50 iterations improves the KL divergence by less than this share (0: run n_iter)."
        ),
    )
    early_exaggeration_iter: int = Field(250, ge=0, le=10_000)
    learning_rate: float | Literal["auto"] = "auto"
    negative_gradient_method: Literal["auto", "fft", "bh"] = "auto"
    pca_components: int = Field(50, ge=0, description="PCA dimensions fed to t-SNE (0 disables).")
    n_jobs: int | Literal["auto"] = Field(
        "auto", description="Threads; auto: 1 for Barnes-Hut (bit-reproducible), every core for FFT."
    )


#: Up to this many samples t-SNE's 3 x perplexity neighbours are searched exactly (blocked GEMMs,
#: ``compute.brute_force.exact_search``), above by openTSNE's annoy index. Measured on PCA-50 scores
#: of alike vectors, 90 neighbours, 2 cores: 100,000 samples 19 s exact against 104 s for annoy
#: (the whole affinity 24 s against 104); 200,000 ~4x that against 186 s (docs/benchmarks.md).
EXACT_NEIGHBOURS_UP_TO = 200_000


def tsne_settings(n: int, params: TsneParams) -> tuple[str, int, str]:
    """Gradient method, threads and neighbour search chosen by N (measured, see docs/benchmarks.md)."""
    method = params.negative_gradient_method
    if method == "auto":
        method = "bh" if n < 5_000 else "fft"
    jobs = params.n_jobs
    if jobs == "auto":
        jobs = 1 if method == "bh" else cores()
    neighbors = "exact" if n <= EXACT_NEIGHBOURS_UP_TO else "annoy"
    return method, int(jobs), neighbors


def exact_index(data: np.ndarray, k: int, metric: str) -> Any:
    """An openTSNE neighbour index that searches exactly, by blocked GEMMs (``compute.brute_force``):
    the same neighbours as openTSNE's exact (scikit-learn) index, and for the fit and ``transform``
    of new samples alike."""
    from openTSNE.nearest_neighbors import KNNIndex

    from ..compute.brute_force import exact_search

    class Exact(KNNIndex):
        VALID_METRICS = ["euclidean", "cosine"]

        def build(self) -> tuple[np.ndarray, np.ndarray]:
            return exact_search(self.data, self.data, self.k, metric=self.metric)  # each row not its own

        def query(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return exact_search(np.asarray(query), self.data, k, metric=self.metric)

    return Exact(data, k, metric=metric)


class TsneReducer(Reducer[TsneParams]):
    name = "tsne"
    title = "t-SNE (openTSNE)"
    Params = TsneParams

    def pca_components(self, dim: int) -> int:
        return self.params.pca_components

    def fit(
        self, x: np.ndarray, *, seed: int, graph: NeighbourGraph | None = None, pca: PcaResult | None = None
    ) -> FittedMap:
        """A perplexity too large for the data is lowered, and said so."""
        try:
            from openTSNE import TSNEEmbedding, affinity, initialization
        except ImportError:
            raise ReportgenError("reducer tsne needs openTSNE; pip install openTSNE") from None
        params = self.params
        k = params.pca_components if 0 < params.pca_components < x.shape[1] else 0  # PCA first only where it reduces
        if k and pca is None:
            from ..compute.pca import fit_pca

            pca = fit_pca(x, k)
        inp = pca.scores[:, :k] if k and pca is not None else x
        n = len(inp)
        notes = []
        if n < 5:
            raise ReportgenError(f"t-SNE needs at least 5 samples, got {n}; remove the tsne reducer")
        perplexity = float(params.perplexity)
        max_perp = max(1.0, (n - 1) / 3.0 - 1.0)
        if perplexity > max_perp:
            notes.append(
                f"perplexity lowered from {params.perplexity:g} to {max_perp:.3g}: t-SNE needs perplexity < "
                "(N-1)/3 "
                f"with N = {n}"
            )
            perplexity = max_perp
        method, jobs, neighbors = tsne_settings(n, params)
        if method == "bh" and jobs > 1:
            notes.append(
                "Barnes-Hut t-SNE on several threads is not bit-reproducible: maps may differ slightly between runs"
            )
        data = np.ascontiguousarray(inp, dtype=np.float64)
        if neighbors == "exact":
            k_nn = min(n - 1, int(3 * perplexity))  # openTSNE's own choice for a perplexity
            aff = affinity.PerplexityBasedNN(
                perplexity=perplexity, knn_index=exact_index(data, k_nn, params.metric), n_jobs=jobs, verbose=False
            )
        else:
            aff = affinity.PerplexityBasedNN(
                data,
                perplexity=perplexity,
                metric=params.metric,
                method=neighbors,
                n_jobs=jobs,
                random_state=seed,
                verbose=False,
            )
        init = initialization.pca(data, random_state=seed, verbose=False)
        lr = max(200.0, n / 12.0) if params.learning_rate == "auto" else float(params.learning_rate)
        emb = TSNEEmbedding(init, aff, negative_gradient_method=method, n_jobs=jobs, random_state=seed, verbose=False)
        if params.early_exaggeration_iter:
            emb = emb.optimize(
                n_iter=params.early_exaggeration_iter,
                exaggeration=12,
                momentum=0.5,
                learning_rate=lr / 12 if params.learning_rate == "auto" else lr,
            )
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
        used = {
            "perplexity": perplexity,
            "metric": params.metric,
            "iterations": done,
            "n_iter": params.n_iter,
            "stop_tol": params.stop_tol,
            "early_exaggeration_iter": params.early_exaggeration_iter,
            "learning_rate": round(lr, 3),
            "negative_gradient_method": method,
            "n_jobs": jobs,
            "neighbors": neighbors,
            "initialization": "pca",
            "kl_divergence": round(float(emb.kl_divergence), 5),
        }
        frame = pca

        def transform(x_new: np.ndarray) -> np.ndarray:
            z = frame.transform(x_new)[:, :k] if k and frame is not None else np.asarray(x_new, np.float64)
            return np.asarray(emb.transform(np.ascontiguousarray(z)), np.float32)

        return FittedMap(coords, used, tuple(notes), transform)
