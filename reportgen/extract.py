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
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .datasets import Dataset
from .errors import DataError, ModelError
from .fingerprint import code_fingerprint
from .images import BadImage, image_hash, make_thumbnail, make_thumbnails, resize_crop
from .models import LoadedModel
from .results import ModelInfo
from .store import content_key

#: Code that shapes embeddings: a change to decoding, preprocessing or pooling recomputes them.
EMBEDDING_CODE = ("reportgen.images", "reportgen.extract")

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
    hashes: np.ndarray | None = None  # (n, 16) uint8 content hash of each decoded image (exact duplicates)
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
        raise ModelError(
            f"layer {layer!r}: reshape {strategy!r} needs a (batch, tokens, dim) output, got shape {tuple(shape)}; use mean or avg_pool_N"
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
                raise ModelError(
                    f"models[].layers[{i}]: index {ref} is out of range; the model has {len(named)} modules (0..{len(named) - 1}); run 'reportgen layers' to list them"
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
            handles = [
                mods[n].register_forward_hook(
                    lambda _m, _i, o, n=n: out.__setitem__(n, RESHAPES[reshapes[n]](o).float().reshape(o.shape[0], -1))
                )
                for n in names
            ]
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


# ----------------------------------------------------------------------------- feeding the device


PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: Samples of the first batch run in fp32 too, to measure a reduced precision's agreement.
AGREEMENT_SAMPLES = 64


def cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(n: int) -> int:
    """Decode workers: none for small jobs (starting processes costs more), else every core but one."""
    c = cores()
    if n < 2048 or c < 2:
        return 0
    return c - 1


@dataclass(frozen=True)
class Feeding:
    """How images reach the model: where they are resized and decoded, and in what precision.

    ``resize``: ``cpu`` (Pillow in the decode workers, uint8 to the device) or ``device`` (raw uint8
    pixels of a fixed-size array dataset go to the device, which resizes with antialiased
    interpolation, as Pillow does, and normalises). ``decode``: ``cpu`` (Pillow) or ``device`` (JPEG
    files decoded by nvjpeg through torchvision.io). Recorded with the embeddings: it is part of
    their identity.
    """

    resize: str = "cpu"
    decode: str = "cpu"
    precision: str = "fp32"

    def as_dict(self) -> dict:
        return {"resize": self.resize, "decode": self.decode, "precision": self.precision}


def choose_feeding(ds: Dataset, device: str, precision: str = "fp32", resizer: str = "pillow") -> Feeding:
    """Device-side resizing and decoding where a GPU is there and the data allow it (the device
    reproduces Pillow's resize: OpenCV's, when asked for, runs on the CPU)."""
    if not device.startswith("cuda") or resizer != "pillow":
        return Feeding("cpu", "cpu", precision)
    if ds.array is not None:
        return Feeding("device", "cpu", precision)
    if ds.paths and all(p.suffix.lower() in (".jpg", ".jpeg") for p in ds.paths) and _has_nvjpeg():
        return Feeding("device", "device", precision)
    return Feeding("cpu", "cpu", precision)


def _has_nvjpeg() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class _Prepared:
    """torch-Dataset-like view: index -> (pixels, thumbnail, index, reason), decoded once.

    ``pixels`` is uint8 (S, S, 3) resized and centre-cropped on the CPU, raw uint8 (H, W, 3) for
    device resizing, or the file's bytes for device decoding; images stay uint8 until the device.
    """

    def __init__(self, ds: Dataset, indices: np.ndarray, prep, thumb: int, feeding: Feeding) -> None:
        self.ds, self.indices, self.prep, self.thumb, self.feeding = ds, indices, prep, thumb, feeding

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = int(self.indices[i])
        try:
            if self.feeding.decode == "device":
                raw = self.ds.paths[idx].read_bytes()
                if raw[:3] != b"\xff\xd8\xff":
                    raise BadImage("not a JPEG file")
                return np.frombuffer(raw, np.uint8), None, image_hash(np.frombuffer(raw, np.uint8)), idx, ""
            img = self.ds.read(idx)
            if img.shape[0] < 1 or img.shape[1] < 1:
                raise BadImage("image has no pixels")
            pixels = img if self.feeding.resize == "device" else resize_crop(img, self.prep)
            return pixels, make_thumbnail(img, self.thumb), image_hash(img), idx, ""
        except (BadImage, OSError) as exc:
            return None, None, None, idx, str(exc) or "unreadable"


def _one_opencv_thread(_worker: int) -> None:
    """In each decode worker (its own process): OpenCV on one thread, as torch is there - the
    workers already use every core between them."""
    import cv2

    cv2.setNumThreads(1)


def _collate(batch):
    """Stacks what was read; bytes of JPEG files stay a list (decoded on the device)."""
    import torch

    good = [b for b in batch if not b[4]]
    idx = np.asarray([b[3] for b in batch], dtype=np.int64)
    reasons = [b[4] for b in batch]
    if not good:
        return None, None, None, idx, reasons
    hashes = np.frombuffer(b"".join(b[2] for b in good), np.uint8).reshape(len(good), 16)
    if good[0][1] is None:  # JPEG bytes
        pixels = [torch.from_numpy(b[0].copy()) for b in good]
        return pixels, None, hashes, idx, reasons
    shapes = {b[0].shape for b in good}
    if len(shapes) > 1:
        raise DataError(f"dataset: images of several sizes ({sorted(shapes)[:3]}) in one batch of a fixed-size dataset")
    pixels = torch.from_numpy(np.stack([b[0] for b in good]))
    thumbs = np.stack([b[1] for b in good])
    return pixels, thumbs, hashes, idx, reasons


def _array_pixels(ds: Dataset, idx: np.ndarray) -> np.ndarray:
    """Raw pixels of an in-memory uint8 array dataset for resizing on the device: grey (B, H, W)
    or RGB (B, H, W, 3) as stored (a slice), other channel counts converted as ``ds.read`` does."""
    arr = ds.array
    if arr.ndim == 3 or arr.shape[3] == 3:
        return np.ascontiguousarray(arr[idx])
    return np.stack([ds.read(int(i)) for i in idx])


def _array_batches(ds: Dataset, indices: np.ndarray, batch_size: int) -> Iterator:
    """Batches of an array dataset shaped as the loader's (pixels, thumbnails, hashes, rows,
    reasons); thumbnails and hashes come later, while the device computes."""
    for b in range(0, len(indices), batch_size):
        idx = indices[b : b + batch_size]
        yield _array_pixels(ds, idx), None, None, idx, [""] * len(idx)


def _array_extras(pixels: np.ndarray, thumb: int) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails and hashes of a batch from ``_array_pixels``, byte for byte as the per-image path
    computes them, in whole-batch operations (a grey image's thumbnail is the grey thumbnail in all
    three channels: Pillow filters each channel alike)."""
    thumbs = make_thumbnails(pixels, thumb)
    if thumbs.ndim == 3:
        thumbs = np.repeat(thumbs[..., None], 3, axis=-1)
    return thumbs, _array_hashes(pixels)


def _array_hashes(pixels: np.ndarray) -> np.ndarray:
    """(B, 16) content hashes of a batch from ``_array_pixels``, each ``image_hash`` of the RGB image
    the per-image path decodes (a grey image's three equal channels)."""
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 3 else pixels
    return np.frombuffer(b"".join(image_hash(im) for im in rgb), np.uint8).reshape(len(pixels), 16)


class _PinnedRing:
    """A few reusable page-locked host buffers for the batches of an array dataset: a batch is
    copied into one and sent to the device without blocking; a buffer is reused only once the copy
    out of it has finished (its event). Page-locked memory is allocated once per job, not per batch,
    and a copy from it does not wait for the device's queued work as one from pageable memory does."""

    def __init__(self, slots: int = 3) -> None:
        self.slots, self.buffers, self.events, self.k = slots, [], [], -1

    def stage(self, pixels: np.ndarray):
        import torch

        self.k = (self.k + 1) % self.slots
        if (
            len(self.buffers) <= self.k
            or self.buffers[self.k].shape[1:] != pixels.shape[1:]
            or len(self.buffers[self.k]) < len(pixels)
        ):
            buf = torch.empty(pixels.shape, dtype=torch.uint8).pin_memory()
            if len(self.buffers) <= self.k:
                self.buffers.append(buf)
                self.events.append(None)
            else:
                self.buffers[self.k] = buf
        elif self.events[self.k] is not None:
            self.events[self.k].synchronize()
        dst = self.buffers[self.k][: len(pixels)]
        dst.copy_(torch.from_numpy(pixels))
        return dst

    def sent(self, device: str) -> None:
        """Called after the non-blocking copy of the last staged buffer to ``device`` was queued:
        marks where on that device's stream the copy ends."""
        import torch

        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(torch.device(device)))
        self.events[self.k] = ev


@functools.lru_cache(maxsize=32)
def _resize_weights(in_size: int, out_size: int, first: int, count: int, mode: str, device):
    """Pillow's integer weights for one resampling pass, only the rows the centre crop keeps, as a
    float64 (count, in_size) matrix on ``device`` - made once, not per batch."""
    import torch

    from .images import pil_coefficients

    return torch.from_numpy(pil_coefficients(in_size, out_size, mode)[first : first + count]).to(device)


def resize_on_device(x, prep):
    """(B, 3, H, W) in 0..255 on any device -> float32 (B, 3, S, S): shorter side to S / crop_pct,
    centre crop - Pillow's resize reproduced byte for byte for bicubic, bilinear and Lanczos: its
    integer weights, its rounding after each pass, the horizontal pass first, each pass one matrix
    product in float64 (exact for these integers) over only the rows and columns the crop keeps.
    No per-batch host work and no synchronisation: a GPU runs it queued behind the forward pass.
    Nearest-neighbour resizing goes through ``F.interpolate`` (within a pixel of Pillow's)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    nh, nw, top, left = prep.geometry(h, w)
    s = prep.input_size
    mode = prep.interpolation if prep.interpolation in ("bicubic", "bilinear", "lanczos", "nearest") else "bicubic"
    if mode == "nearest":
        x = x.float()
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="nearest")
        return x[..., top : top + s, left : left + s]
    x = x.double()
    if nw == w:
        x = x[..., left : left + s]
    if nh == h:
        x = x[..., top : top + s, :]
    return _pil_passes(
        x,
        _resize_weights(h, nh, top, s, mode, x.device) if nh != h else None,
        _resize_weights(w, nw, left, s, mode, x.device) if nw != w else None,
    ).float()


def _pil_passes(x, rows, cols):
    """Pillow's two 8-bit resampling passes over a float64 (..., H, W) tensor: ``cols`` (W', W)
    along the width first, then ``rows`` (H', H) along the height, each a matrix product followed
    by Pillow's rounding and clipping (exact: integer weights times 8-bit pixels stay far below
    2**53); ``None`` skips a pass."""
    from .images import PIL_PRECISION

    half, unit = float(1 << (PIL_PRECISION - 1)), 1.0 / (1 << PIL_PRECISION)
    if cols is not None:
        x = (x @ cols.T).add_(half).mul_(unit).floor_().clamp_(0, 255)
    if rows is not None:
        x = (rows @ x).add_(half).mul_(unit).floor_().clamp_(0, 255)
    return x


def thumbnails_on_device(pixels, size: int):
    """``images.make_thumbnails`` on the device, byte for byte: uint8 (B, H, W) grey or (B, H, W, 3)
    RGB where it already is -> uint8 (B, size, size, 3) there (centre square, Pillow's Lanczos down,
    bicubic up). Queued behind the forward pass, it leaves the host thread free, and the thumbnails
    come back with the embeddings, once per shard. ``None`` where Pillow's nearest-neighbour
    upscaling (2x or more) applies: the host makes those."""
    import torch

    from .images import thumbnail_filter

    h, w = pixels.shape[1:3]
    side = min(h, w)
    how = thumbnail_filter(side, size)
    if how == "nearest":
        return None
    top, left = (h - side) // 2, (w - side) // 2
    sq = pixels[:, top : top + side, left : left + side]
    if sq.ndim == 3:
        sq = sq.unsqueeze(-1)
    if how is not None:
        wts = _resize_weights(side, size, 0, size, how, sq.device)
        sq = _pil_passes(sq.permute(0, 3, 1, 2).double(), wts, wts).to(torch.uint8).permute(0, 2, 3, 1)
    return sq.expand(-1, -1, -1, 3).contiguous() if sq.shape[-1] == 1 else sq.contiguous()


@functools.lru_cache(maxsize=16)
def _norm_constants(mean: tuple, std: tuple, device):
    """The normalisation's (1, 3, 1, 1) mean and std on ``device``, made once: creating them for
    every batch copies from the host, which on a GPU waits for all queued work - one stall per batch."""
    import torch

    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
    )


def normalise_on_device(x, prep, *, channels_last: bool):
    """float (B, 3, S, S) in 0..255 -> normalised, in the same float32 operations as
    ``images.normalise`` (so the CPU path gives the same numbers either way)."""
    import torch

    mean, std = _norm_constants(prep.mean, prep.std, x.device)
    x = (x * (1.0 / 255.0) - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def to_model_input(pixels, prep, *, device: str, resize: bool, channels_last: bool):
    """uint8 (B, H, W, 3) or grey (B, H, W), on the CPU or already sent -> the normalised float32 batch the model reads, on
    ``device``: copied as uint8 (pinned, non-blocking), then converted, resized (if asked) and normalised there."""
    x = pixels.to(device, non_blocking=True)
    if x.ndim == 3:  # grey (B, H, W): a third of the bytes to copy, channels made on the device
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)
    x = x.permute(0, 3, 1, 2)
    x = resize_on_device(x, prep) if resize else x.float()
    return normalise_on_device(x, prep, channels_last=channels_last)


def decode_on_device(blobs, prep, thumb: int, *, device: str):
    """JPEG bytes -> (pixels float (B, 3, S, S) in 0..255, thumbnails uint8 (B, t, t, 3) on the device, failures)
    with nvjpeg (torchvision.io) on a GPU; the thumbnail is an antialiased downscale of the centre
    square, as ``images.make_thumbnail``. ``failures`` lists (position, reason) of undecodable files."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    failures: list[tuple[int, str]] = []
    try:
        images = decode_jpeg(blobs, device=device, mode=ImageReadMode.RGB)
    except RuntimeError:  # one bad file fails the batch: decode one by one to name it
        images = []
        for j, b in enumerate(blobs):
            try:
                images.append(decode_jpeg(b, device=device, mode=ImageReadMode.RGB))
            except RuntimeError as exc:
                failures.append((j, f"cannot decode JPEG ({str(exc).splitlines()[0][:100]})"))
    inputs, thumbs = [], []
    for im in images:
        x = im.unsqueeze(0).float()
        inputs.append(resize_on_device(x, prep)[0])
        h, w = x.shape[-2:]
        side = min(h, w)
        sq = x[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        t = (
            F.interpolate(sq, size=(thumb, thumb), mode="bicubic", antialias=True, align_corners=False)
            if side != thumb
            else sq
        )
        thumbs.append(t.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0))
    if not inputs:
        return None, None, failures
    return torch.stack(inputs), torch.stack(thumbs), failures  # thumbnails copied back once per shard


@contextlib.contextmanager
def _cudnn_benchmark(device: str):
    """cuDNN's autotuner on for the fixed-shape batches of an extraction, restored afterwards."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class Extractor:
    """One model's hooked extraction, reused for every shard of a job: the TorchScript graph is
    traced once, the feeding chosen once. ``run(ds, indices)`` returns that slice's embeddings."""

    def __init__(
        self,
        model: LoadedModel,
        layers: Sequence[ResolvedLayer],
        *,
        batch_size: int = 64,
        thumbnail_px: int = 32,
        on_bad_image: str = "skip",
        max_features: int = 16_384,
        num_workers: int | None = None,
        jit: bool | str = "auto",
        precision: str = "fp32",
        feeding: Feeding | None = None,
        expected_samples: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision != "fp32" and not model.device.startswith("cuda"):
            raise ModelError(
                f"model {model.name}: precision {precision} runs on a GPU only and this model runs on {model.device}; use precision: fp32"
            )
        self.model, self.layers = model, list(layers)
        self.batch_size, self.thumbnail_px, self.on_bad_image = batch_size, thumbnail_px, on_bad_image
        self.max_features, self.num_workers, self.jit, self.precision = max_features, num_workers, jit, precision
        self.forced_feeding = feeding  # None: chosen from the dataset and the device
        self.expected = expected_samples  # the whole job's size (all shards): decides tracing once for every shard
        self.traced = None
        self.reshapes: dict[str, str] = {}
        self.agreement: dict[str, dict] = {}  # layer -> agreement of the reduced precision with fp32

    def feeding(self, ds: Dataset) -> Feeding:
        return self.forced_feeding or choose_feeding(
            ds, self.model.device, self.precision, self.model.preprocess.resizer
        )

    def run(self, ds: Dataset, indices: np.ndarray, *, progress: Callable[[int], None] | None = None) -> Shard:
        """Run the model over ``ds[indices]`` once, capturing every layer in the same forward pass."""
        import torch
        from torch.utils.data import DataLoader

        model, layers, module = self.model, self.layers, self.model.module
        feeding = self.feeding(ds)
        device = model.device
        workers = default_workers(self.expected or len(indices)) if self.num_workers is None else self.num_workers
        on_gpu = device.startswith("cuda")
        from_array = feeding.resize == "device" and feeding.decode == "cpu" and ds.array is not None
        ring = _PinnedRing() if from_array and on_gpu else None
        if from_array:
            # An in-memory array: no decode workers (starting them costs more than 10,000 images take
            # on a GPU) and no reading thread (it contends with this one for Python's lock, which
            # every queued operation takes back). This thread slices the batch, sends it as uint8,
            # queues its forward pass and thumbnails (both made on the device), then hashes it while
            # the device computes.
            loader = _array_batches(ds, indices, self.batch_size)
        else:
            loader = DataLoader(
                _Prepared(ds, indices, model.preprocess, self.thumbnail_px, feeding),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=workers,
                collate_fn=_collate,
                persistent_workers=False,
                prefetch_factor=4 if workers else None,
                pin_memory=on_gpu,
                worker_init_fn=_one_opencv_thread if workers and model.preprocess.resizer == "opencv" else None,
                generator=torch.Generator(),  # its own: iterating must not draw from the caller's global RNG
            )
        chunks: dict[str, list] = {l.name: [] for l in layers}
        thumbs, kept, bad, hashes = [], [], [], []
        calls = 0
        use_jit = (
            ((self.expected or len(indices)) >= JIT_MIN_SAMPLES and device == "cpu")
            if self.jit == "auto"
            else bool(self.jit)
        )
        dtype = getattr(torch, PRECISIONS[self.precision]) if PRECISIONS[self.precision] else None
        was_training = module.training
        module.eval()
        try:
            with (
                capture(module, layers, max_features=self.max_features) as store,
                torch.inference_mode(),
                _cudnn_benchmark(device),
            ):
                if self.reshapes:
                    store["__reshapes__"].update(self.reshapes)
                for pixels, th, hs, idx, reasons in loader:
                    if from_array:  # uint8 to the device once: the model's input and the thumbnails are made there
                        raw = pixels
                        pixels = (ring.stage(raw) if ring is not None else torch.from_numpy(raw)).to(
                            device, non_blocking=True
                        )
                        if ring is not None:
                            ring.sent(device)
                    if feeding.decode == "device" and pixels is not None:
                        x, th, failed = decode_on_device(pixels, model.preprocess, self.thumbnail_px, device=device)
                        good = [j for j, r in enumerate(reasons) if not r]
                        for j, why in failed:
                            reasons[good[j]] = why
                        if failed:
                            hs = np.delete(hs, [j for j, _ in failed], axis=0)
                    ok = np.asarray([not r for r in reasons])
                    for i, r in zip(idx, reasons):
                        if r:
                            if self.on_bad_image == "fail":
                                raise DataError(
                                    f"dataset: cannot read sample {ds.ids[int(i)]!r}: {r} (on_bad_image: fail; use skip to continue past it)"
                                )
                            bad.append((int(i), r))
                    if ok.any():
                        if feeding.decode == "device":
                            x = normalise_on_device(x, model.preprocess, channels_last=model.channels_last)
                        else:
                            x = to_model_input(
                                pixels,
                                model.preprocess,
                                device=device,
                                resize=feeding.resize == "device",
                                channels_last=model.channels_last,
                            )
                        real = x.shape[0]
                        if (
                            on_gpu and real < self.batch_size
                        ):  # the last batch padded to the others' shape: no second cuDNN autotuning
                            x = torch.cat([x, x.new_zeros((self.batch_size - real, *x.shape[1:]))]).contiguous(
                                memory_format=torch.channels_last if model.channels_last else torch.contiguous_format
                            )
                        outs = self._forward(x, store, dtype, calls == 0 and use_jit, real=real)
                        if x.shape[0] != real:
                            outs = [o[:real] for o in outs]
                        calls += 1
                        for l, o in zip(layers, outs):
                            chunks[l.name].append(o)  # stays on the device: one copy back per shard, no sync per batch
                        if from_array:  # queued behind the forward pass; the hashes made while the device runs it
                            th = thumbnails_on_device(pixels, self.thumbnail_px)
                            th, hs = _array_extras(raw, self.thumbnail_px) if th is None else (th, _array_hashes(raw))
                        thumbs.append(th)
                        hashes.append(hs)
                        kept.append(idx[ok])
                    if progress:
                        progress(len(idx))
                self.reshapes = dict(store["__reshapes__"])
        finally:
            module.train(was_training)
        if kept:
            emb = {name: torch.cat(c).float().cpu().numpy() for name, c in chunks.items()}
            idx_all = np.concatenate(kept)
            th_all = torch.cat(thumbs).cpu().numpy() if isinstance(thumbs[0], torch.Tensor) else np.concatenate(thumbs)
            h_all = np.concatenate(hashes)
        else:
            emb = {l.name: np.zeros((0, 0), np.float32) for l in layers}
            idx_all = np.zeros(0, np.int64)
            th_all = np.zeros((0, self.thumbnail_px, self.thumbnail_px, 3), np.uint8)
            h_all = np.zeros((0, 16), np.uint8)
        return Shard(
            indices=idx_all,
            embeddings=emb,
            thumbnails=th_all,
            bad=tuple(bad),
            reshapes=dict(self.reshapes),
            forward_calls=calls,
            hashes=h_all,
        )

    def _forward(self, x, store: dict, dtype, trace: bool, real: int | None = None) -> list:
        """One forward pass -> every layer's pooled output (float32, on the device); ``real``: how
        many leading samples are images (the rest pad the last batch)."""
        import torch

        model, layers, module = self.model, self.layers, self.model.module
        if self.traced is not None:
            return [o.float() for o in self.traced(x)]
        for l in layers:
            store.pop(l.name, None)
        try:
            if dtype is not None:
                with torch.autocast(device_type=x.device.type, dtype=dtype):
                    module(x)
            else:
                module(x)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"model {model.name}: forward pass failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        for l in layers:
            if l.name not in store:
                raise ModelError(
                    f"layer {l.name!r} was not called during the forward pass; choose a layer the model uses"
                )
        outs = [store[l.name].float() for l in layers]
        if dtype is not None and not self.agreement:
            self.agreement = self._agreement(x[: min(AGREEMENT_SAMPLES, real or len(x))], outs, store)
        if trace and dtype is None:
            self.traced = freeze_tap(module, layers, dict(store["__reshapes__"]), x, outs)
            if self.traced is not None:  # every batch from the same graph, whichever batch came first
                outs = [o.float() for o in self.traced(x)]
        return outs

    def _agreement(self, x, reduced: list, store: dict) -> dict:
        """The reduced-precision outputs against an fp32 pass over the same samples, per layer."""
        import torch

        self.model.module(x)
        out = {}
        for l, r in zip(self.layers, reduced):
            ref = store[l.name].float()
            r = r[: len(ref)]
            cos = torch.nn.functional.cosine_similarity(ref, r, dim=1)
            rel = (r - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)
            out[l.name] = {
                "samples": int(len(ref)),
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "relative_error_max": float(rel.max()),
            }
        return out


def embeddings_key(
    info: ModelInfo,
    layers: Sequence[ResolvedLayer],
    mspec,
    ds: Dataset,
    indices: np.ndarray,
    thumb: int,
    on_bad_image: str,
) -> str:
    """The content key of one model's embeddings of one selection: weights, preprocessing, layers,
    data, precision and the code that made them - the same for the local and the Ray engine, and
    wherever images were resized or decoded (the device reproduces Pillow's resize byte for byte;
    the manifest records where)."""
    import hashlib

    return content_key(
        {
            "code": code_fingerprint(*EMBEDDING_CODE),
            "arch": info.arch,
            "weights": info.weights_sha256,
            "preprocess": info.preprocess.as_dict() if info.preprocess else None,
            "layers": [(l.name, l.reshape) for l in layers],
            "max_features": mspec.max_features,
            "dataset": ds.fingerprint,
            "selection": hashlib.sha256(np.ascontiguousarray(indices, np.int64).tobytes()).hexdigest(),
            "thumb": thumb,
            "on_bad_image": on_bad_image,
            **({"precision": mspec.precision} if mspec.precision != "fp32" else {}),
        }
    )


def extract_shard(
    model: LoadedModel,
    ds: Dataset,
    indices: np.ndarray,
    layers: Sequence[ResolvedLayer],
    *,
    progress: Callable[[int], None] | None = None,
    **options,
) -> Shard:
    """Run the model over ``ds[indices]`` once, capturing every layer in the same forward pass (a
    one-shard ``Extractor``; reuse an ``Extractor`` across shards to trace the graph once)."""
    return Extractor(model, layers, **options).run(ds, indices, progress=progress)
