"""Reducers: embeddings -> 2-D maps, one module per method, all in one registry.

from reportgen.reducers import Reducer, ReducerParams, FittedMap, register_reducer
"""

from __future__ import annotations

from .base import (
    REDUCERS,
    FittedMap,
    Reducer,
    ReducerParams,
    call_fit,
    make_reducer,
    register_reducer,
    unregister_reducer,
)
from .pacmap import PacmapParams, PacmapReducer
from .pca import PcaParams, PcaReducer
from .tsne import TsneParams, TsneReducer
from .umap import UmapParams, UmapReducer

for _cls in (PcaReducer, TsneReducer, UmapReducer, PacmapReducer):
    register_reducer(_cls)

__all__ = [
    "REDUCERS",
    "FittedMap",
    "Reducer",
    "ReducerParams",
    "register_reducer",
    "unregister_reducer",
    "make_reducer",
    "call_fit",
    "PcaParams",
    "TsneParams",
    "UmapParams",
    "PacmapParams",
]
