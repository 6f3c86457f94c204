"""PaCMAP map (optional extra: pip install 'reportgen[pacmap]')."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from ..errors import ReportgenError
from .base import FittedMap, Reducer, ReducerParams, neighbours_for

if TYPE_CHECKING:
    from ..compute.neighbours import NeighbourGraph
    from ..compute.pca import PcaResult


class PacmapParams(ReducerParams):
    """PaCMAP parameters (same names as ``pacmap.PaCMAP``); needs the optional pacmap package."""

    method: Literal["pacmap"] = "pacmap"
    n_neighbors: int = Field(10, ge=2)
    MN_ratio: float = Field(0.5, ge=0)
    FP_ratio: float = Field(2.0, ge=0)


class PacmapReducer(Reducer[PacmapParams]):
    name = "pacmap"
    title = "PaCMAP"
    Params = PacmapParams

    def fit(
        self, x: np.ndarray, *, seed: int, graph: NeighbourGraph | None = None, pca: PcaResult | None = None
    ) -> FittedMap:
        try:
            import pacmap
        except ImportError:
            raise ReportgenError(
                "reducer pacmap needs the pacmap package; pip install 'reportgen[pacmap]' or remove the reducer"
            ) from None
        p = self.params
        k, notes = neighbours_for(len(x), p.n_neighbors, "PaCMAP", margin=2)
        reducer = pacmap.PaCMAP(
            n_components=2, n_neighbors=k, MN_ratio=p.MN_ratio, FP_ratio=p.FP_ratio, random_state=seed
        )
        coords = reducer.fit_transform(np.ascontiguousarray(x, dtype=np.float32), init="pca").astype(np.float32)

        def transform(x_new: np.ndarray) -> np.ndarray:
            return reducer.transform(np.ascontiguousarray(x_new, dtype=np.float32))

        return FittedMap(
            coords, {"n_neighbors": k, "MN_ratio": p.MN_ratio, "FP_ratio": p.FP_ratio}, tuple(notes), transform
        )
