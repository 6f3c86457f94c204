"""Images on the device: the batch of uint8 pixels sent once, then resized (Pillow's filters, byte for
byte), normalised, decoded (JPEG, nvjpeg) and made into thumbnails where it already is.

The CPU path (``reportgen.images``) and this one give the same numbers: the resize reproduces
Pillow's integer weights and rounding in float64 matrix products, normalisation runs the same
float32 operations. Nothing here synchronises with the host, so on a GPU it all queues behind the
forward pass.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Union

from . import PIL_PRECISION, Preprocess, pil_coefficients, thumbnail_filter

if TYPE_CHECKING:
    from torch import Tensor
    from torch import device as _device

    Device = Union[str, _device]  # noqa: UP007 - an alias, evaluated at run time by nothing


@functools.lru_cache(maxsize=32)
def _resize_weights(in_size: int, out_size: int, first: int, count: int, mode: str, device: Device) -> Tensor:
    """Pillow's integer weights for one resampling pass, only the rows the centre crop keeps, as a
    float64 (count, in_size) matrix on ``device`` - made once, not per batch."""
    import torch

    return torch.from_numpy(pil_coefficients(in_size, out_size, mode)[first : first + count]).to(device)


def resize_on_device(x: Tensor, prep: Preprocess) -> Tensor:
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


def _pil_passes(x: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    """Pillow's two 8-bit resampling passes over a float64 (..., H, W) tensor: ``cols`` (W', W)
    along the width first, then ``rows`` (H', H) along the height, each a matrix product followed
    by Pillow's rounding and clipping (exact: integer weights times 8-bit pixels stay far below
    2**53); ``None`` skips a pass."""
    half, unit = float(1 << (PIL_PRECISION - 1)), 1.0 / (1 << PIL_PRECISION)
    if cols is not None:
        x = (x @ cols.T).add_(half).mul_(unit).floor_().clamp_(0, 255)
    if rows is not None:
        x = (rows @ x).add_(half).mul_(unit).floor_().clamp_(0, 255)
    return x


def thumbnails_on_device(pixels: Tensor, size: int) -> Tensor | None:
    """``images.make_thumbnails`` on the device, byte for byte: uint8 (B, H, W) grey or (B, H, W, 3)
    RGB where it already is -> uint8 (B, size, size, 3) there (centre square, Pillow's Lanczos down,
    bicubic up). Queued behind the forward pass, it leaves the host thread free, and the thumbnails
    come back with the embeddings, once per shard. ``None`` where Pillow's nearest-neighbour
    upscaling (2x or more) applies: the host makes those."""
    import torch

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
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...], device: Device) -> tuple[Tensor, Tensor]:
    """The normalisation's (1, 3, 1, 1) mean and std on ``device``, made once: creating them for
    every batch copies from the host, which on a GPU waits for all queued work - one stall per batch."""
    import torch

    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
    )


def normalise_on_device(x: Tensor, prep: Preprocess, *, channels_last: bool) -> Tensor:
    """float (B, 3, S, S) in 0..255 -> normalised, in the same float32 operations as
    ``images.normalise`` (so the CPU path gives the same numbers either way)."""
    import torch

    mean, std = _norm_constants(prep.mean, prep.std, x.device)
    x = (x * (1.0 / 255.0) - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def to_model_input(pixels: Tensor, prep: Preprocess, *, device: str, resize: bool, channels_last: bool) -> Tensor:
    """uint8 (B, H, W, 3) or grey (B, H, W), on the CPU or already sent -> the normalised float32 batch
    the model reads, on ``device``: copied as uint8 (pinned, non-blocking), then converted, resized (if
    asked) and normalised there."""
    x = pixels.to(device, non_blocking=True)
    if x.ndim == 3:  # grey (B, H, W): a third of the bytes to copy, channels made on the device
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)
    x = x.permute(0, 3, 1, 2)
    x = resize_on_device(x, prep) if resize else x.float()
    return normalise_on_device(x, prep, channels_last=channels_last)


def decode_on_device(
    blobs: list[Tensor], prep: Preprocess, thumb: int, *, device: str
) -> tuple[Tensor | None, Tensor | None, list[tuple[int, str]]]:
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
