"""The reducer registry: one class per 2-D map method, and the table every other part reads.

A reducer declares its parameter model (the spec's ``reducers:`` entries are validated against
it), how it fits (``fit(x, *, seed, graph) -> FittedMap``), how it places new samples
(``FittedMap.transform``) and what its cache key holds. The spec's reducer union, the check
metric names (``trustworthiness_<name>``), the map titles and the cache keys all come from
``REDUCERS``. To add one, copy ``reducers/umap.py`` (or define a class in your own code) and
``register_reducer`` it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from ..errors import ReportgenError
from ..fingerprint import code_fingerprint
from ..options import ReportOptions
from ..params import Params
from ..registry import Registry

if TYPE_CHECKING:
    from ..compute.neighbours import NeighbourGraph
    from ..compute.pca import PcaResult


class ReducerParams(Params):
    """Base of every reducer's parameters: ``method`` names the reducer (its registry key)."""

    method: str


@dataclass(frozen=True, eq=False)
class FittedMap:
    """A fitted 2-D map: coordinates, the parameters actually used, notes on automatic choices,
    and (when the fit made one) a ``transform`` that places new samples in the same frame."""

    coords: np.ndarray  # (N, 2) float32
    params: Mapping[str, Any]
    notes: tuple[str, ...] = ()
    transformer: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    @property
    def can_transform(self) -> bool:
        return self.transformer is not None

    def transform(self, x_new: np.ndarray) -> np.ndarray:
        """(M, d) samples of the same layer (another model's or dataset's) -> (M, 2) in this frame."""
        if self.transformer is None:
            raise ReportgenError(
                "this map cannot place new samples (it was read from the cache or fitted on a shared graph)"
            )
        return np.asarray(self.transformer(np.asarray(x_new)), np.float32)


P = TypeVar("P", bound=ReducerParams)


class Reducer(Generic[P]):
    """A 2-D map method. Subclass it (``Reducer[MyParams]``), set ``name``, ``title`` and ``Params``,
    implement ``fit``.

    The constructor only stores parameters (scikit-learn's rule); ``options`` are the report's
    options (``metric`` for reducers whose distance defaults to the report's).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    Params: ClassVar[type[ReducerParams]]
    #: A one-line description for the map's caption.
    caption: ClassVar[str] = (
        "Nearby dots have similar embeddings in this map; distances between far-apart clusters are not meaningful."
    )
    #: True when fitting costs nothing per sample (PCA projects every sample): never sampled (report.map_cap).
    fits_all: ClassVar[bool] = False

    def __init__(self, params: P, options: ReportOptions | None = None) -> None:
        self.params: P = params
        self.options = options

    def pca_components(self, dim: int) -> int:
        """How many PCA components ``fit`` may read from ``pca`` (0: none); the layer's PCA computes
        at least this many (at most the layer's dimension)."""
        return 0

    def graph_neighbours(self, n: int) -> int:
        """How many neighbours of the layer's graph ``fit`` can use instead of its own search (0: none)."""
        return 0

    def fit(
        self, x: np.ndarray, *, seed: int, graph: NeighbourGraph | None = None, pca: PcaResult | None = None
    ) -> FittedMap:  # pragma: no cover - abstract
        raise NotImplementedError

    def cache_parts(self) -> dict[str, Any]:
        """What the map's cache key holds besides the embeddings, the layer and the seed."""
        return self.params.model_dump(mode="json")

    @classmethod
    def fingerprint(cls) -> str:
        """The code that makes this reducer's maps: its module and every reportgen module it imports."""
        return code_fingerprint(cls)


REDUCERS: Registry[type[Reducer[Any]]] = Registry("reducer")


def register_reducer(cls: type[Reducer[Any]] | None = None, *, replace: bool = False) -> Any:
    """Add a reducer class to the registry (usable as a decorator). Its ``Params.method`` must be a
    ``Literal`` of its ``name``, so the spec's ``reducers:`` entries can name it."""

    def add(c: type[Reducer[Any]]) -> type[Reducer[Any]]:
        for attr in ("name", "title", "Params"):
            if not hasattr(c, attr):
                raise TypeError(f"reducer {c.__name__} must define {attr!r}")
        if not issubclass(c.Params, ReducerParams):
            raise TypeError(f"reducer {c.name}: Params must subclass reportgen.reducers.ReducerParams")
        default = c.Params.model_fields["method"].default
        if default != c.name:
            raise TypeError(f"reducer {c.name}: Params.method must default to {c.name!r} (got {default!r})")
        if c.fit is Reducer.fit:
            raise TypeError(f"reducer {c.name} must implement fit()")
        return REDUCERS.register(c.name, c, replace=replace)

    return add if cls is None else add(cls)


def unregister_reducer(name: str) -> None:
    REDUCERS.unregister(name)


def make_reducer(params: ReducerParams, options: ReportOptions | None = None) -> Reducer[Any]:
    return REDUCERS.lookup(params.method)(params, options)


def call_fit(
    reducer: Reducer[Any],
    x: np.ndarray,
    *,
    seed: int,
    graph: NeighbourGraph | None = None,
    pca: PcaResult | None = None,
) -> FittedMap:
    """``reducer.fit`` with the keyword arguments it accepts (a user's reducer may take only ``seed``)."""
    sig = inspect.signature(reducer.fit).parameters
    kwargs: dict[str, Any] = {"seed": seed}
    if "graph" in sig or any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        kwargs["graph"] = graph
    if "pca" in sig or any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        kwargs["pca"] = pca
    fitted = reducer.fit(x, **kwargs)
    if not isinstance(fitted, FittedMap):
        raise ReportgenError(f"reducer {reducer.name}: fit() returned {type(fitted).__name__}, not a FittedMap")
    coords = np.asarray(fitted.coords, np.float32)
    if coords.shape != (len(x), 2) or not np.isfinite(coords).all():
        raise ReportgenError(
            f"reducer {reducer.name}: fit() gave coordinates of shape {coords.shape} (finite: "
            f"{bool(np.isfinite(coords).all())}); expected ({len(x)}, 2), all finite"
        )
    return fitted


def neighbours_for(n: int, requested: int, what: str, *, margin: int) -> tuple[int, list[str]]:
    """The neighbour count a reducer can use with N samples, lowered (and said so) when needed."""
    if requested < n:
        return requested, []
    k = max(2, n - margin)
    return k, [f"n_neighbors lowered from {requested} to {k}: {what} needs n_neighbors < N = {n}"]
