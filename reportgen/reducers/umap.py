"""UMAP map (umap-learn), on the layer's own neighbour graph where it can.

``graph`` (a NeighbourGraph in the reducer's metric with >= n_neighbors - 1 neighbours) replaces
umap-learn's own neighbour search: the layer's graph is reused and pynndescent's numba kernels are
never compiled. Below 4,096 samples umap-learn would compute all pairwise distances instead (its
"small data" path, ~2.5x slower here); ``force_approximation_algorithm`` makes it take the given
graph there too. A map fitted on a given graph cannot ``transform`` new data, so comparisons pass
no graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from ..errors import ReportgenError
from ..options import ReportOptions
from .base import FittedMap, Reducer, ReducerParams, neighbours_for

if TYPE_CHECKING:
    from ..compute.neighbours import NeighbourGraph
    from ..compute.pca import PcaResult


class UmapParams(ReducerParams):
    """umap-learn parameters (same names as ``umap.UMAP``)."""

    method: Literal["umap"] = "umap"
    n_neighbors: int = Field(15, ge=2)
    min_dist: float = Field(0.1, ge=0)
    init: Literal["auto", "spectral", "pca", "random"] = Field(
        "auto",
        description=(
            "Initial layout; auto: umap-learn's spectral one up to 50,000 samples, its PCA one above (as good a map, "
            "half the time at 100,000)."
        ),
    )
    metric: Literal["euclidean", "cosine"] | None = Field(
        None,
        description="Distance; unset: the report's metric (report.metric), so UMAP reuses the layer's neighbour graph.",
    )


#: Above this many samples ``init: auto`` starts UMAP from PCA, not from the graph's spectral
#: layout. Measured on 100,000 alike vectors (the map cap's sample; docs/benchmarks.md): spectral
#: 145 s, two thirds of it ARPACK's eigenvectors; PCA 76 s, 10-NN preservation 0.111 against
#: 0.108-0.109, trustworthiness 0.983 against 0.981-0.982. At 50,000: 35 against 46 s; at 10,000
#: Fashion-MNIST equal (7.7 against 7.4 s).
SPECTRAL_UP_TO = 50_000


def umap_init(n: int, k: int, init: str) -> str:
    """The initial layout a fit of n samples with k neighbours starts from."""
    if n <= k + 1:  # too few samples for a spectral layout or a meaningful PCA
        return "random"
    if init == "auto":
        return "spectral" if n <= SPECTRAL_UP_TO else "pca"
    return init


class UmapReducer(Reducer[UmapParams]):
    name = "umap"
    title = "UMAP"
    Params = UmapParams

    def __init__(self, params: UmapParams, options: ReportOptions | None = None) -> None:
        if params.metric is None:  # resolved here, so cache keys name the metric that ran
            params = params.model_copy(update={"metric": getattr(options, "metric", "euclidean")})
        super().__init__(params, options)

    def graph_neighbours(self, n: int) -> int:
        same = self.params.metric == getattr(self.options, "metric", None)
        return max(0, min(self.params.n_neighbors, n - 1) - 1) if same else 0

    def fit(
        self, x: np.ndarray, *, seed: int, graph: NeighbourGraph | None = None, pca: PcaResult | None = None
    ) -> FittedMap:
        try:
            import umap
        except ImportError:
            raise ReportgenError("reducer umap needs umap-learn; pip install 'reportgen[umap]'") from None
        params = self.params
        n = len(x)
        k, notes = neighbours_for(n, params.n_neighbors, "UMAP", margin=1)
        if n < 4:
            raise ReportgenError(f"UMAP needs at least 4 samples, got {n}; remove the umap reducer")
        import warnings

        init = umap_init(n, k, params.init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is the point
            knn = None
            if graph is not None and graph.metric == params.metric and graph.indices.shape[1] >= k - 1:
                rows = np.arange(n)[:, None]  # umap-learn counts each sample as its own first neighbour
                knn = (
                    np.hstack([rows, graph.indices[:, : k - 1]]).astype(np.int32),
                    np.hstack([np.zeros((n, 1)), graph.distances[:, : k - 1]]).astype(np.float32),
                )
            reducer = umap.UMAP(
                n_components=2,
                n_neighbors=k,
                min_dist=params.min_dist,
                metric=params.metric,
                random_state=seed,
                init=init,
                precomputed_knn=knn if knn is not None else (None, None, None),
                force_approximation_algorithm=knn is not None,
            )
            coords = reducer.fit_transform(np.ascontiguousarray(x, dtype=np.float32)).astype(np.float32)
        source = "all pairwise distances" if n < 4096 else "pynndescent (approximate)"
        if knn is not None and graph is not None:
            source = "the layer's exact graph" if graph.method == "exact" else f"the layer's graph ({graph.method})"
        used = {
            "n_neighbors": k,
            "min_dist": params.min_dist,
            "metric": params.metric,
            "init": init,
            "neighbours": source,
        }

        def transform(x_new: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return reducer.transform(np.ascontiguousarray(x_new, dtype=np.float32))

        return FittedMap(coords, used, tuple(notes), None if knn is not None else transform)
