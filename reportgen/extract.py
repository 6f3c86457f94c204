"""Extraction: model + samples -> pooled layer embeddings, all layers in one forward pass.

``list_layers`` discovers modules (index in ``named_modules()``, as 3LC numbers them, name,
type, output shape, parameters); ``resolve_layers`` checks a spec's choices against them;
``extract_shard`` runs one slice of the dataset and returns its embeddings, so that slices
can be spread over workers (e.g. Ray Data) and written as shards.
The reshape runs inside the hook: whole activation maps are never kept.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .datasets import Dataset
from .errors import DataError, ModelError
from .images import BadImage, make_thumbnail, preprocess_image
from .models import LoadedModel

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, eq=False)
class Shard:
    """Embeddings of one slice of the dataset (only successfully read samples)."""

    indices: np.ndarray  # dataset indices, in order
    embeddings: dict[str, np.ndarray]  # layer -> (n, d) float32
    thumbnails: np.ndarray  # (n, t, t, 3) uint8
    bad: tuple[tuple[int, str], ...] = ()  # (dataset index, reason)
    reshapes: dict[str, str] = field(default_factory=dict)
    forward_calls: int = 0


# ----------------------------------------------------------------------------- reshapes


def _adaptive(n: int) -> Callable:
    def f(t):
        import torch.nn.functional as F

        return F.adaptive_avg_pool2d(t, n).flatten(1)

    return f


RESHAPES: dict[str, Callable] = {
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
        raise ModelError(f"layer {layer!r}: reshape {strategy!r} needs a (batch, tokens, dim) output, got shape {tuple(shape)}; use mean or avg_pool_N")
    if strategy.startswith("avg_pool") and ndim != 4:
        raise ModelError(f"layer {layer!r}: reshape {strategy!r} needs a (batch, C, H, W) output, got shape {tuple(shape)}")


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


def _shape_of(out) -> str:
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
    def make_hook(name: str):
        def hook(_m, _i, out) -> None:  # must return None, or the output would be replaced
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
        raise ModelError(f"model {model.name}: dry forward pass at {size}x{size} failed ({type(exc).__name__}: {str(exc)[:160]})") from None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return [
        LayerInfo(i, name or "(model)", type(m).__name__, shapes.get(name, "not called"), sum(p.numel() for p in m.parameters(recurse=True)))
        for i, (name, m) in enumerate(named)
    ]


def _in_chans(module) -> int:
    for m in module.modules():
        if hasattr(m, "in_channels"):
            return int(m.in_channels)
    return 3


def resolve_layers(module, layers: Sequence) -> list[ResolvedLayer]:
    """Spec layer choices (name or named_modules() index) -> module names, with 'did you mean'."""
    named = [n for n, _ in module.named_modules()]
    lookup = set(named)
    out = []
    for i, spec in enumerate(layers):
        ref = spec.name
        if isinstance(ref, int):
            if not 0 <= ref < len(named):
                raise ModelError(f"models[].layers[{i}]: index {ref} is out of range; the model has {len(named)} modules (0..{len(named) - 1}); run 'reportgen layers' to list them")
            name = named[ref]
        else:
            name = ref
            if name not in lookup:
                hint = difflib.get_close_matches(name, named, n=3, cutoff=0.5)
                more = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else "; run 'reportgen layers' to list them"
                raise ModelError(f"models[].layers[{i}]: no layer named {name!r}{more}")
        if name == "":
            raise ModelError(f"models[].layers[{i}]: index 0 is the whole model; pick a sub-module (e.g. the global pool)")
        out.append(ResolvedLayer(name=name, index=named.index(name), reshape=spec.reshape, requested=str(ref)))
    names = [r.name for r in out]
    for n in names:
        if names.count(n) > 1:
            raise ModelError(f"models[].layers: layer {n!r} is chosen twice (by name and by index?); list it once")
    return out


@contextlib.contextmanager
def capture(module, layers: Sequence[ResolvedLayer], *, max_features: int) -> Iterator[dict]:
    """Register one forward hook per layer that stores the *reshaped* output; always removes them.

    Yields a dict that each forward pass fills with {layer: (B, d) tensor}; a ``"__reshapes__"``
    entry records the strategy chosen for ``auto``.
    """
    store: dict = {"__reshapes__": {}}
    modules = dict(module.named_modules())
    handles = []

    def make_hook(layer: ResolvedLayer):
        def hook(_m, _inp, out):
            if not hasattr(out, "ndim"):
                kind = type(out).__name__
                raise ModelError(f"layer {layer.name!r} returns a {kind}, not a tensor; choose a sub-module that returns a tensor")
            strategy = store["__reshapes__"].get(layer.name)
            if strategy is None:
                strategy = default_reshape(out.ndim) if layer.reshape == "auto" else layer.reshape
                _check_reshape(layer.name, strategy, tuple(out.shape))
                size = reshaped_size(strategy, tuple(out.shape))
                if size > max_features:
                    raise ModelError(
                        f"layer {layer.name!r}: {strategy} gives {size:,} features per sample (output {tuple(out.shape)}), "
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


# ----------------------------------------------------------------------------- frozen graph

#: Tracing and freezing costs ~1.5 s; from about this many images it pays back (see docs/benchmarks.md).
JIT_MIN_SAMPLES = 1024


def freeze_tap(module, layers: Sequence[ResolvedLayer], reshapes: dict[str, str], x, expected: list) -> Callable | None:
    """A TorchScript-frozen graph that returns the chosen layers' reshaped outputs in one pass.

    Freezing folds batch norms into convolutions and fuses operators (measured 1.4x faster on CPU
    for EfficientNet-Lite0 at 224 px). The graph is checked against the eager hooked outputs of the
    same batch; any failure or mismatch falls back to eager execution, logged, never silent.
    """
    import warnings

    import torch

    names = [l.name for l in layers]
    mods = dict(module.named_modules())

    class Tap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, inp):
            out: dict = {}
            handles = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, RESHAPES[reshapes[n]](o).float().reshape(o.shape[0], -1))) for n in names]
            try:
                self.model(inp)
            finally:
                for h in handles:
                    h.remove()
            return tuple(out[n] for n in names)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            traced = torch.jit.freeze(torch.jit.trace(Tap().eval(), x[:2], check_trace=False))
            got = traced(x)
        for name, g, e in zip(names, got, expected):
            scale = float(e.abs().max()) or 1.0
            if g.shape != e.shape or float((g - e).abs().max()) > 1e-3 * scale:
                log.info("frozen graph differs from eager on layer %s; staying eager", name)
                return None
    except Exception as exc:  # tracing is an optimisation: any failure means eager execution
        log.info("cannot freeze the model graph (%s: %s); staying eager", type(exc).__name__, str(exc)[:120])
        return None
    log.info("model graph frozen with TorchScript for %d layer(s)", len(names))
    return traced


# ----------------------------------------------------------------------------- data loading


class _Prepared:
    """torch-Dataset-like view: index -> (input, thumbnail, ok, reason) decoded once."""

    def __init__(self, ds: Dataset, indices: np.ndarray, model: LoadedModel, thumb: int) -> None:
        self.ds, self.indices, self.prep, self.thumb = ds, indices, model.preprocess, thumb

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = int(self.indices[i])
        s = self.prep.input_size
        try:
            img = self.ds.read(idx)
            if img.shape[0] < 1 or img.shape[1] < 1:
                raise BadImage("image has no pixels")
            return preprocess_image(img, self.prep), make_thumbnail(img, self.thumb), idx, ""
        except BadImage as exc:
            return np.zeros((3, s, s), np.float32), np.zeros((self.thumb, self.thumb, 3), np.uint8), idx, str(exc) or "unreadable"


def _collate(batch):
    import torch

    x = torch.from_numpy(np.stack([b[0] for b in batch]))
    thumbs = np.stack([b[1] for b in batch])
    idx = np.asarray([b[2] for b in batch], dtype=np.int64)
    reasons = [b[3] for b in batch]
    return x, thumbs, idx, reasons


def default_workers(n: int) -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n < 2048 or cores < 2:
        return 0
    return max(1, min(4, cores - 1))


def extract_shard(
    model: LoadedModel,
    ds: Dataset,
    indices: np.ndarray,
    layers: Sequence[ResolvedLayer],
    *,
    batch_size: int = 64,
    thumbnail_px: int = 32,
    on_bad_image: str = "skip",
    max_features: int = 16_384,
    num_workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    jit: bool | str = "auto",
) -> Shard:
    """Run the model over ``ds[indices]`` once, capturing every layer in the same forward pass."""
    import torch
    from torch.utils.data import DataLoader

    module = model.module
    workers = default_workers(len(indices)) if num_workers is None else num_workers
    loader = DataLoader(
        _Prepared(ds, indices, model, thumbnail_px), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, persistent_workers=False, prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # its own: iterating must not draw from the caller's global RNG
    )
    chunks: dict[str, list[np.ndarray]] = {l.name: [] for l in layers}
    thumbs, kept, bad = [], [], []
    calls = 0
    traced = None
    use_jit = (len(indices) >= JIT_MIN_SAMPLES and model.device == "cpu") if jit == "auto" else bool(jit)
    was_training = module.training
    module.eval()
    try:
        with capture(module, layers, max_features=max_features) as store, torch.inference_mode():
            for x, th, idx, reasons in loader:
                ok = np.asarray([not r for r in reasons])
                for i, r in zip(idx, reasons):
                    if r:
                        if on_bad_image == "fail":
                            raise DataError(f"dataset: cannot read sample {ds.ids[int(i)]!r}: {r} (on_bad_image: fail; use skip to continue past it)")
                        bad.append((int(i), r))
                if ok.any():
                    if not ok.all():
                        x = x[torch.from_numpy(ok)]
                    x = x.to(model.device, non_blocking=True)
                    if model.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    if traced is not None:
                        outs = traced(x)
                        calls += 1
                        for l, o in zip(layers, outs):
                            chunks[l.name].append(o.cpu().numpy())
                    else:
                        for l in layers:
                            store.pop(l.name, None)
                        try:
                            module(x)
                        except ModelError:
                            raise
                        except Exception as exc:
                            raise ModelError(f"model {model.name}: forward pass failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
                        calls += 1
                        for l in layers:
                            if l.name not in store:
                                raise ModelError(f"layer {l.name!r} was not called during the forward pass; choose a layer the model uses")
                            chunks[l.name].append(store[l.name].cpu().numpy())
                        if calls == 1 and use_jit:
                            traced = freeze_tap(module, layers, dict(store["__reshapes__"]), x, [store[l.name] for l in layers])
                    thumbs.append(th[ok])
                    kept.append(idx[ok])
                if progress:
                    progress(len(idx))
            reshapes = dict(store["__reshapes__"])
    finally:
        module.train(was_training)
    if kept:
        emb = {name: np.concatenate(c).astype(np.float32, copy=False) for name, c in chunks.items()}
        idx_all = np.concatenate(kept)
        th_all = np.concatenate(thumbs)
    else:
        emb = {l.name: np.zeros((0, 0), np.float32) for l in layers}
        idx_all = np.zeros(0, np.int64)
        th_all = np.zeros((0, thumbnail_px, thumbnail_px, 3), np.uint8)
    return Shard(indices=idx_all, embeddings=emb, thumbnails=th_all, bad=tuple(bad), reshapes=reshapes, forward_calls=calls)
