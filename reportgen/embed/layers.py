"""Layers of a model: discovery (``list_layers``), the spec's choices resolved against them
(``resolve_layers``, with "did you mean"), the reshapes that pool an activation map to a vector,
and ``capture``: forward hooks that keep every chosen layer's pooled output of one pass.

The reshape runs inside the hook: whole activation maps are never kept.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from ..models import LoadedModel

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

    from ..options import LayerSpec


@dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str
    type: str
    output_shape: str
    params: int


@dataclass(frozen=True)
class ResolvedLayer:
    name: str  # module name in named_modules()
    index: int
    reshape: str  # the strategy actually used (never "auto" after the first batch)
    requested: str  # what the spec said


# ----------------------------------------------------------------------------- reshapes


Reshape = Callable[["Tensor"], "Tensor"]


def _adaptive(n: int) -> Reshape:
    def f(t: Tensor) -> Tensor:
        import torch.nn.functional as F

        return F.adaptive_avg_pool2d(t, n).flatten(1)

    return f


RESHAPES: dict[str, Reshape] = {
    "mean": lambda t: t.mean(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t,
    "max": lambda t: t.amax(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t,
    "flatten": lambda t: t.flatten(1),
    "avg_pool_1": _adaptive(1),
    "avg_pool_2": _adaptive(2),
    "avg_pool_3": _adaptive(3),
    "cls": lambda t: t[:, 0],
    "token_mean": lambda t: t.mean(dim=1),
}


def default_reshape(ndim: int) -> str:
    """(B,C,H,W) -> spatial mean; (B,T,D) -> token mean; (B,D) -> as is."""
    return {4: "mean", 3: "token_mean", 5: "mean"}.get(ndim, "flatten")


def _check_reshape(layer: str, strategy: str, shape: tuple) -> None:
    ndim = len(shape)
    if strategy in ("cls", "token_mean") and ndim != 3:
        raise ModelError(
            f"layer {layer!r}: reshape {strategy!r} needs a (batch, tokens, dim) output, got shape {tuple(shape)}; "
            "use mean or avg_pool_N"
        )
    if strategy.startswith("avg_pool") and ndim != 4:
        raise ModelError(
            f"layer {layer!r}: reshape {strategy!r} needs a (batch, C, H, W) output, got shape {tuple(shape)}"
        )


def reshaped_size(strategy: str, shape: Sequence[int]) -> int:
    shape = tuple(shape)
    if strategy in ("mean", "max"):
        return int(shape[1]) if len(shape) > 1 else 1
    if strategy.startswith("avg_pool"):
        n = int(strategy[-1])
        return int(shape[1]) * n * n
    if strategy in ("cls", "token_mean"):
        return int(shape[-1])
    return int(np.prod(shape[1:]))


# ----------------------------------------------------------------------------- discovery


def _shape_of(out: object) -> str:
    if hasattr(out, "shape"):
        return str(tuple(out.shape))
    if isinstance(out, (tuple, list)):
        return "(" + ", ".join(_shape_of(o) for o in out) + ("," if len(out) == 1 else "") + ")"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_shape_of(v)}" for k, v in out.items()) + "}"
    return type(out).__name__


def list_layers(model: LoadedModel, *, input_size: int | None = None) -> list[LayerInfo]:
    """One dry forward pass with a hook on every module: index, name, type, output shape, params."""
    import torch

    module = model.module
    size = input_size or model.preprocess.input_size
    shapes: dict[str, str] = {}
    handles = []
    named = list(module.named_modules())

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: Module, _i: object, out: object) -> None:  # must return None, or the output would be replaced
            shapes.setdefault(name, _shape_of(out))

        return hook

    for name, m in named:
        handles.append(m.register_forward_hook(make_hook(name)))
    was_training = module.training
    try:
        module.eval()
        in_chans = _in_chans(module)
        x = torch.zeros(1, in_chans, size, size, device=model.device)
        with torch.inference_mode():
            module(x)
    except Exception as exc:
        raise ModelError(
            f"model {model.name}: dry forward pass at {size}x{size} failed ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return [
        LayerInfo(
            i,
            name or "(model)",
            type(m).__name__,
            shapes.get(name, "not called"),
            sum(p.numel() for p in m.parameters(recurse=True)),
        )
        for i, (name, m) in enumerate(named)
    ]


def _in_chans(module: Module) -> int:
    for m in module.modules():
        if hasattr(m, "in_channels"):
            return int(getattr(m, "in_channels"))  # noqa: B009 - any module type may have it
    return 3


def resolve_layers(module: Module, layers: Sequence[LayerSpec]) -> list[ResolvedLayer]:
    """Spec layer choices (name or named_modules() index) -> module names, with 'did you mean'."""
    named = [n for n, _ in module.named_modules()]
    lookup = set(named)
    out = []
    for i, spec in enumerate(layers):
        ref = spec.name
        if isinstance(ref, int):
            if not 0 <= ref < len(named):
                raise ModelError(
                    f"models[].layers[{i}]: index {ref} is out of range; the model has {len(named)} modules "
                    f"(0..{len(named) - 1}); run 'reportgen layers' to list them"
                )
            name = named[ref]
        else:
            name = ref
            if name not in lookup:
                hint = difflib.get_close_matches(name, named, n=3, cutoff=0.5)
                more = (
                    f"; did you mean {', '.join(repr(h) for h in hint)}?"
                    if hint
                    else "; run 'reportgen layers' to list them"
                )
                raise ModelError(f"models[].layers[{i}]: no layer named {name!r}{more}")
        if name == "":
            raise ModelError(
                f"models[].layers[{i}]: index 0 is the whole model; pick a sub-module (e.g. the global pool)"
            )
        out.append(ResolvedLayer(name=name, index=named.index(name), reshape=spec.reshape, requested=str(ref)))
    names = [r.name for r in out]
    for n in names:
        if names.count(n) > 1:
            raise ModelError(f"models[].layers: layer {n!r} is chosen twice (by name and by index?); list it once")
    return out


@contextlib.contextmanager
def capture(module: Module, layers: Sequence[ResolvedLayer], *, max_features: int) -> Iterator[dict[str, Any]]:
    """Register one forward hook per layer that stores the *reshaped* output; always removes them.

    Yields a dict that each forward pass fills with {layer: (B, d) tensor}; a ``"__reshapes__"``
    entry records the strategy chosen for ``auto``.
    """
    store: dict[str, Any] = {"__reshapes__": {}}
    modules = dict(module.named_modules())
    handles = []

    def make_hook(layer: ResolvedLayer) -> Callable[..., None]:
        def hook(_m: Module, _inp: object, out: Any) -> None:
            if not hasattr(out, "ndim"):
                kind = type(out).__name__
                raise ModelError(
                    f"layer {layer.name!r} returns a {kind}, not a tensor; choose a sub-module that returns a tensor"
                )
            strategy = store["__reshapes__"].get(layer.name)
            if strategy is None:
                strategy = default_reshape(out.ndim) if layer.reshape == "auto" else layer.reshape
                _check_reshape(layer.name, strategy, tuple(out.shape))
                size = reshaped_size(strategy, tuple(out.shape))
                if size > max_features:
                    raise ModelError(
                        f"layer {layer.name!r}: {strategy} gives {size:,} features per sample (output "
                        f"{tuple(out.shape)}), "
                        f"over the {max_features:,} limit; use reshape: mean or avg_pool_2, or raise max_features"
                    )
                store["__reshapes__"][layer.name] = strategy
            store[layer.name] = RESHAPES[strategy](out).float().reshape(out.shape[0], -1)

        return hook

    try:
        for layer in layers:
            handles.append(modules[layer.name].register_forward_hook(make_hook(layer)))
        yield store
    finally:
        for h in handles:
            h.remove()
