"""PCA map: the first two principal components of the layer's (mean-centred) PCA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from .base import FittedMap, Reducer, ReducerParams

if TYPE_CHECKING:
    from ..compute.neighbours import NeighbourGraph
    from ..compute.pca import PcaResult


class PcaParams(ReducerParams):
    """Principal components (always present, mean-centred)."""

    method: Literal["pca"] = "pca"
    n_components: int = Field(10, gt=0, le=512, description="Components analysed (table, galleries).")


class PcaReducer(Reducer[PcaParams]):
    name = "pca"
    title = "PCA (components 1 and 2)"
    Params = PcaParams
    caption = "Nearby dots have similar embeddings; axes are the first two principal components."
    fits_all = True

    def pca_components(self, dim: int) -> int:
        return 2

    def fit(
        self, x: np.ndarray, *, seed: int, graph: NeighbourGraph | None = None, pca: PcaResult | None = None
    ) -> FittedMap:
        if pca is None:
            from ..compute.pca import fit_pca

            pca = fit_pca(x, 2)
        coords = np.zeros((len(x), 2), np.float32)
        m = min(2, pca.scores.shape[1])
        coords[:, :m] = pca.scores[:, :m]

        def transform(x_new: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x_new), 2), np.float32)
            out[:, :m] = pca.transform(x_new)[:, :m]
            return out

        return FittedMap(coords, {"components": [1, 2]}, (), transform)

    def cache_parts(self) -> dict:
        return {"method": "pca"}  # the map does not depend on n_components
