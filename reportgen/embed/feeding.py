"""Feeding the device: how images reach the model (``Feeding``), decoded and resized in worker
processes (``PreparedImages`` + ``collate``) or sliced straight from an in-memory array
(``array_batches``), through reusable page-locked buffers on a GPU (``PinnedRing``).

Images stay uint8 until the device, whichever way they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets import Dataset
from ..errors import DataError
from ..images import BadImage, Preprocess, image_hash, make_thumbnail, make_thumbnails, resize_crop
from ..machine import cores

#: What a decode worker hands back for one sample: pixels (uint8, or a JPEG's bytes), thumbnail,
#: content hash, dataset row, and why it could not be read ("" when it could).
Item = tuple[np.ndarray | None, np.ndarray | None, bytes | None, int, str]


@dataclass
class Batch:
    """One batch as read: pixels (uint8 on the host, or already sent; JPEG bytes for device
    decoding; None when nothing in it was readable), thumbnails and hashes (None: made later),
    dataset rows and, per row, why it could not be read ("" when it could)."""

    pixels: Any
    thumbnails: Any
    hashes: np.ndarray | None
    rows: np.ndarray
    reasons: list[str]
    raw: np.ndarray | None = None  # the host pixels of an array batch (its hashes are made from them)


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


class PreparedImages:
    """torch-Dataset-like view: index -> (pixels, thumbnail, index, reason), decoded once.

    ``pixels`` is uint8 (S, S, 3) resized and centre-cropped on the CPU, raw uint8 (H, W, 3) for
    device resizing, or the file's bytes for device decoding; images stay uint8 until the device.
    """

    def __init__(self, ds: Dataset, indices: np.ndarray, prep: Preprocess, thumb: int, feeding: Feeding) -> None:
        self.ds, self.indices, self.prep, self.thumb, self.feeding = ds, indices, prep, thumb, feeding

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Item:
        idx = int(self.indices[i])
        try:
            if self.feeding.decode == "device" and self.ds.paths is not None:
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


def one_opencv_thread(_worker: int) -> None:
    """In each decode worker (its own process): OpenCV on one thread, as torch is there - the
    workers already use every core between them."""
    import cv2

    cv2.setNumThreads(1)


def collate(batch: list[Item]) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray, list[str]]:
    """Stacks what was read: (pixels, thumbnails, hashes, rows, reasons); bytes of JPEG files stay
    a list (decoded on the device); pixels are None when nothing in the batch was readable."""
    import torch

    idx = np.asarray([b[3] for b in batch], dtype=np.int64)
    reasons = [b[4] for b in batch]
    pixels = [b[0] for b in batch if not b[4] and b[0] is not None]
    if not pixels:
        return None, None, None, idx, reasons
    hashes = np.frombuffer(b"".join(b[2] or b"" for b in batch if not b[4]), np.uint8).reshape(len(pixels), 16)
    thumbs = [b[1] for b in batch if not b[4] and b[1] is not None]
    if not thumbs:  # JPEG bytes
        return [torch.from_numpy(np.array(p)) for p in pixels], None, hashes, idx, reasons
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise DataError(f"dataset: images of several sizes ({sorted(shapes)[:3]}) in one batch of a fixed-size dataset")
    return torch.from_numpy(np.stack(pixels)), np.stack(thumbs), hashes, idx, reasons


def array_pixels(ds: Dataset, idx: np.ndarray) -> np.ndarray:
    """Raw pixels of an in-memory uint8 array dataset for resizing on the device: grey (B, H, W)
    or RGB (B, H, W, 3) as stored (a slice), other channel counts converted as ``ds.read`` does."""
    arr = ds.array
    assert arr is not None, "an array dataset"
    if arr.ndim == 3 or arr.shape[3] == 3:
        return np.ascontiguousarray(arr[idx])
    return np.stack([ds.read(int(i)) for i in idx])


def array_batches(ds: Dataset, indices: np.ndarray, batch_size: int) -> Iterator[Batch]:
    """Batches of an array dataset, read by slicing; thumbnails and hashes come later, while the
    device computes."""
    for b in range(0, len(indices), batch_size):
        idx = indices[b : b + batch_size]
        yield Batch(array_pixels(ds, idx), None, None, idx, [""] * len(idx))


def array_extras(pixels: np.ndarray, thumb: int) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails and hashes of a batch from ``_array_pixels``, byte for byte as the per-image path
    computes them, in whole-batch operations (a grey image's thumbnail is the grey thumbnail in all
    three channels: Pillow filters each channel alike)."""
    thumbs = make_thumbnails(pixels, thumb)
    if thumbs.ndim == 3:
        thumbs = np.repeat(thumbs[..., None], 3, axis=-1)
    return thumbs, array_hashes(pixels)


def array_hashes(pixels: np.ndarray) -> np.ndarray:
    """(B, 16) content hashes of a batch from ``_array_pixels``, each ``image_hash`` of the RGB image
    the per-image path decodes (a grey image's three equal channels)."""
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 3 else pixels
    return np.frombuffer(b"".join(image_hash(im) for im in rgb), np.uint8).reshape(len(pixels), 16)


class PinnedRing:
    """A few reusable page-locked host buffers for the batches of an array dataset: a batch is
    copied into one and sent to the device without blocking; a buffer is reused only once the copy
    out of it has finished (its event). Page-locked memory is allocated once per job, not per batch,
    and a copy from it does not wait for the device's queued work as one from pageable memory does."""

    def __init__(self, slots: int = 3) -> None:
        self.slots, self.k = slots, -1
        self.buffers: list[Any] = []  # page-locked uint8 tensors
        self.events: list[Any] = []  # the CUDA event marking where the copy out of each ends (None: none yet)

    def stage(self, pixels: np.ndarray) -> Any:
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
