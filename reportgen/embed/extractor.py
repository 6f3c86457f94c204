"""Extraction: a model and a slice of a dataset -> every chosen layer's pooled embeddings, all
layers in one forward pass per batch.

An ``Extractor`` is made once per job and runs shard after shard (the local engine runs them in
this process, the Ray engine in its workers): the TorchScript graph is traced once, the feeding
chosen once. Each batch goes: read (decode workers, or a slice of an in-memory array) -> the
device (uint8) -> resized and normalised there or before -> one forward pass with hooks ->
pooled outputs kept on the device, copied back once per shard.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets import Dataset
from ..errors import DataError, ModelError
from ..images.device import decode_on_device, normalise_on_device, thumbnails_on_device, to_model_input
from ..machine import environ_kept
from ..models import LoadedModel
from .feeding import (
    Batch,
    Feeding,
    PinnedRing,
    PreparedImages,
    array_batches,
    array_extras,
    array_hashes,
    choose_feeding,
    collate,
    default_workers,
    one_opencv_thread,
)
from .layers import RESHAPES, ResolvedLayer, capture

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: Samples of the first batch run in fp32 too, to measure a reduced precision's agreement.
AGREEMENT_SAMPLES = 64
#: Tracing and freezing costs ~1.5 s; from about this many images it pays back (see docs/benchmarks.md).
JIT_MIN_SAMPLES = 1024


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


# ----------------------------------------------------------------------------- the frozen graph


def freeze_tap(
    module: Any, layers: Sequence[ResolvedLayer], reshapes: dict[str, str], x: Any, expected: list[Any]
) -> Callable[[Any], tuple[Any, ...]] | None:
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

        def forward(self, inp: Any) -> tuple[Any, ...]:
            out: dict[str, Any] = {}

            def keep(name: str) -> Callable[..., None]:
                def hook(_m: Any, _i: Any, o: Any) -> None:
                    out[name] = RESHAPES[reshapes[name]](o).float().reshape(o.shape[0], -1)

                return hook

            handles = [mods[n].register_forward_hook(keep(n)) for n in names]
            try:
                self.model(inp)
            finally:
                for h in handles:
                    h.remove()
            return tuple(out[n] for n in names)

    try:
        with warnings.catch_warnings(), environ_kept():
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


@contextlib.contextmanager
def _cudnn_benchmark(device: str) -> Iterator[None]:
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


# ----------------------------------------------------------------------------- one run


@dataclass
class _Outputs:
    """What a run keeps: pooled outputs per layer (on the device until the end), thumbnails,
    hashes, readable rows, unreadable ones, forward passes."""

    layers: list[ResolvedLayer]
    chunks: dict[str, list[Any]] = field(default_factory=dict)
    thumbs: list[Any] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    kept: list[np.ndarray] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    calls: int = 0

    def add(self, outs: list[Any], thumbs: Any, hashes: np.ndarray, rows: np.ndarray) -> None:
        for l, o in zip(self.layers, outs):
            self.chunks.setdefault(l.name, []).append(o)  # stays on the device: one copy back per shard
        self.thumbs.append(thumbs)
        self.hashes.append(hashes)
        self.kept.append(rows)

    def shard(self, thumb: int, reshapes: dict[str, str]) -> Shard:
        import torch

        if not self.kept:
            return Shard(
                indices=np.zeros(0, np.int64),
                embeddings={l.name: np.zeros((0, 0), np.float32) for l in self.layers},
                thumbnails=np.zeros((0, thumb, thumb, 3), np.uint8),
                hashes=np.zeros((0, 16), np.uint8),
                bad=tuple(self.bad),
                reshapes=dict(reshapes),
                forward_calls=self.calls,
            )
        on_device = isinstance(self.thumbs[0], torch.Tensor)
        return Shard(
            indices=np.concatenate(self.kept),
            embeddings={name: torch.cat(c).float().cpu().numpy() for name, c in self.chunks.items()},
            thumbnails=torch.cat(self.thumbs).cpu().numpy() if on_device else np.concatenate(self.thumbs),
            hashes=np.concatenate(self.hashes),
            bad=tuple(self.bad),
            reshapes=dict(reshapes),
            forward_calls=self.calls,
        )


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
                f"model {model.name}: precision {precision} runs on a GPU only and this model runs on "
                f"{model.device}; use precision: fp32"
            )
        self.model, self.layers = model, list(layers)
        self.batch_size, self.thumbnail_px, self.on_bad_image = batch_size, thumbnail_px, on_bad_image
        self.max_features, self.num_workers, self.jit, self.precision = max_features, num_workers, jit, precision
        self.forced_feeding = feeding  # None: chosen from the dataset and the device
        self.expected = expected_samples  # the whole job's size (all shards): decides tracing once for every shard
        self.traced: Callable[[Any], tuple[Any, ...]] | None = None
        self.reshapes: dict[str, str] = {}
        self.agreement: dict[str, dict[str, float]] = {}  # layer -> agreement of the reduced precision with fp32

    def feeding(self, ds: Dataset) -> Feeding:
        return self.forced_feeding or choose_feeding(
            ds, self.model.device, self.precision, self.model.preprocess.resizer
        )

    def run(self, ds: Dataset, indices: np.ndarray, *, progress: Callable[[int], None] | None = None) -> Shard:
        """Run the model over ``ds[indices]`` once, capturing every layer in the same forward pass."""
        import torch

        feeding = self.feeding(ds)
        device = self.model.device
        from_array = feeding.resize == "device" and feeding.decode == "cpu" and ds.array is not None
        ring = PinnedRing() if from_array and device.startswith("cuda") else None
        n_job = self.expected or len(indices)
        trace = (n_job >= JIT_MIN_SAMPLES and device == "cpu") if self.jit == "auto" else bool(self.jit)
        name = PRECISIONS[self.precision]
        dtype = getattr(torch, name) if name else None
        out = _Outputs(self.layers)
        module = self.model.module
        was_training = module.training
        module.eval()
        try:
            with (
                capture(module, self.layers, max_features=self.max_features) as store,
                torch.inference_mode(),
                _cudnn_benchmark(device),
            ):
                store["__reshapes__"].update(self.reshapes)
                batches = (
                    array_batches(ds, indices, self.batch_size) if from_array else self._loader(ds, indices, feeding)
                )
                for b in batches:
                    if from_array:  # uint8 to the device once: the model's input and the thumbnails are made there
                        b.raw = b.pixels
                        staged = ring.stage(b.raw) if ring is not None else torch.from_numpy(b.raw)
                        b.pixels = staged.to(device, non_blocking=True)
                        if ring is not None:
                            ring.sent(device)
                    x = self._inputs(b, feeding)
                    self._note_unreadable(b, ds, out)
                    if x is not None:
                        outs = self._forward(x, store, dtype, trace and out.calls == 0)
                        out.calls += 1
                        thumbs, hashes = b.thumbnails, b.hashes
                        if from_array:  # queued behind the forward pass; the hashes made while the device runs it
                            assert b.raw is not None
                            thumbs = thumbnails_on_device(b.pixels, self.thumbnail_px)
                            if thumbs is None:
                                thumbs, hashes = array_extras(b.raw, self.thumbnail_px)
                            else:
                                hashes = array_hashes(b.raw)
                        out.add(outs, thumbs, hashes, b.rows[[not r for r in b.reasons]])  # type: ignore[arg-type]
                    if progress:
                        progress(len(b.rows))
                self.reshapes = dict(store["__reshapes__"])
        finally:
            module.train(was_training)
        return out.shard(self.thumbnail_px, self.reshapes)

    def _loader(self, ds: Dataset, indices: np.ndarray, feeding: Feeding) -> Iterator[Batch]:
        """Batches decoded (and resized, unless the device does it) by worker processes."""
        import torch
        from torch.utils.data import DataLoader

        workers = default_workers(self.expected or len(indices)) if self.num_workers is None else self.num_workers
        loader: DataLoader[Any] = DataLoader(
            PreparedImages(ds, indices, self.model.preprocess, self.thumbnail_px, feeding),  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
            pin_memory=self.model.device.startswith("cuda"),
            worker_init_fn=one_opencv_thread if workers and self.model.preprocess.resizer == "opencv" else None,
            generator=torch.Generator(),  # its own: iterating must not draw from the caller's global RNG
        )
        for pixels, thumbs, hashes, rows, reasons in loader:
            yield Batch(pixels, thumbs, hashes, rows, reasons)

    def _inputs(self, b: Batch, feeding: Feeding) -> _Padded | None:
        """The batch as the model reads it (normalised float32 on the device, padded to the batch size
        on a GPU), or None when none of it was readable; a JPEG that the device cannot decode joins
        the batch's unreadable rows."""
        import torch

        prep, device = self.model.preprocess, self.model.device
        x = None
        if feeding.decode == "device" and b.pixels is not None:
            x, b.thumbnails, failed = decode_on_device(b.pixels, prep, self.thumbnail_px, device=device)
            good = [j for j, r in enumerate(b.reasons) if not r]
            for j, why in failed:
                b.reasons[good[j]] = why
            if failed and b.hashes is not None:
                b.hashes = np.delete(b.hashes, [j for j, _ in failed], axis=0)
        if all(b.reasons):
            return None
        if feeding.decode == "device":
            assert x is not None, "decoded when any of the batch was readable"
            x = normalise_on_device(x, prep, channels_last=self.model.channels_last)
        else:
            x = to_model_input(
                b.pixels, prep, device=device, resize=feeding.resize == "device", channels_last=self.model.channels_last
            )
        real = x.shape[0]
        if device.startswith("cuda") and real < self.batch_size:  # the last batch padded: no second cuDNN autotuning
            fmt = torch.channels_last if self.model.channels_last else torch.contiguous_format
            x = torch.cat([x, x.new_zeros((self.batch_size - real, *x.shape[1:]))]).contiguous(memory_format=fmt)
        return _Padded(x, real)

    def _note_unreadable(self, b: Batch, ds: Dataset, out: _Outputs) -> None:
        for i, r in zip(b.rows, b.reasons):
            if not r:
                continue
            if self.on_bad_image == "fail":
                raise DataError(
                    f"dataset: cannot read sample {ds.ids[int(i)]!r}: {r} (on_bad_image: fail; use skip to "
                    "continue "
                    "past it)"
                )
            out.bad.append((int(i), r))

    def _forward(self, padded: _Padded, store: dict[str, Any], dtype: Any, trace: bool) -> list[Any]:
        """One forward pass -> every layer's pooled output (float32, on the device), the padding dropped."""
        import torch

        x, real = padded.x, padded.real
        if self.traced is not None:
            return [o.float()[:real] for o in self.traced(x)]
        for l in self.layers:
            store.pop(l.name, None)
        try:
            if dtype is not None:
                with torch.autocast(device_type=x.device.type, dtype=dtype):
                    self.model.module(x)
            else:
                self.model.module(x)
        except ModelError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise ModelError(f"model {self.model.name}: forward pass failed ({type(exc).__name__}: {first})") from None
        for l in self.layers:
            if l.name not in store:
                raise ModelError(
                    f"layer {l.name!r} was not called during the forward pass; choose a layer the model uses"
                )
        outs = [store[l.name].float() for l in self.layers]
        if dtype is not None and not self.agreement:
            self.agreement = self._agreement(x[: min(AGREEMENT_SAMPLES, real)], outs, store)
        if trace and dtype is None:
            self.traced = freeze_tap(self.model.module, self.layers, dict(store["__reshapes__"]), x, outs)
            if self.traced is not None:  # every batch from the same graph, whichever batch came first
                outs = [o.float() for o in self.traced(x)]
        return [o[:real] for o in outs]

    def _agreement(self, x: Any, reduced: list[Any], store: dict[str, Any]) -> dict[str, dict[str, float]]:
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


@dataclass(frozen=True)
class _Padded:
    """A model input and how many of its leading rows are images (the rest pad the last batch)."""

    x: Any
    real: int


def extract_shard(
    model: LoadedModel,
    ds: Dataset,
    indices: np.ndarray,
    layers: Sequence[ResolvedLayer],
    *,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> Shard:
    """Run the model over ``ds[indices]`` once, capturing every layer in the same forward pass (a
    one-shard ``Extractor``; reuse an ``Extractor`` across shards to trace the graph once)."""
    return Extractor(model, layers, **options).run(ds, indices, progress=progress)
