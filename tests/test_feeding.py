"""Feeding the device: the GPU's way (uint8 to the device, antialiased resize and normalisation
there, JPEG decoding by torchvision.io) checked against the CPU path. The same functions run on
the CPU here, so the code a GPU runs is tested on this machine too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.compute.kernels import knn_accuracy
from reportgen.compute.neighbours import exact_graph
from reportgen.compute.similarity import linear_cka
from reportgen.datasets import load_dataset, select_samples
from reportgen.datasets.digits import DigitsDataset
from reportgen.datasets.image_folder import ImageFolderDataset
from reportgen.embed.extractor import Extractor
from reportgen.embed.feeding import Feeding, choose_feeding, default_workers
from reportgen.embed.layers import resolve_layers
from reportgen.errors import ModelError
from reportgen.images import Preprocess, normalise, read_image_file, resize_crop
from reportgen.images.device import decode_on_device, resize_on_device
from reportgen.spec import LayerSpec


def test_device_resize_matches_pillow():
    """Pillow's resize reproduced on the device (its integer weights, its rounding after each pass):
    byte for byte, up (8 px digits -> 96), down (a 512 px photo -> 224, centre crop), bilinear, and
    Lanczos; many sizes; grey and colour."""
    from skimage import data

    digits = load_dataset(DigitsDataset(kind="digits"))
    rng = np.random.default_rng(0)
    cases = [
        (np.stack([digits.read(i) for i in range(200)]), Preprocess(96, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)),
        (data.astronaut()[None], Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)),
        (data.chelsea()[None], Preprocess(160, (0.5,) * 3, (0.5,) * 3, "bilinear", 0.9)),
        (data.coffee()[None], Preprocess(128, (0.5,) * 3, (0.5,) * 3, "lanczos", 0.95)),
    ]
    cases += [
        (rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8), Preprocess(s, (0.5,) * 3, (0.5,) * 3, "bicubic", c))
        for h, w, s, c in [
            (28, 28, 224, 1.0),
            (28, 28, 32, 0.875),
            (37, 51, 64, 0.9),
            (300, 200, 96, 1.0),
            (64, 64, 64, 1.0),
            (64, 80, 64, 1.0),
        ]
    ]
    for images, prep in cases:
        ref = np.stack([resize_crop(im, prep) for im in images]).astype(np.float32)
        got = resize_on_device(torch.from_numpy(images).permute(0, 3, 1, 2), prep).permute(0, 2, 3, 1).numpy()
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.array_equal(got, ref), (images.shape, prep, np.abs(got - ref).max())


def test_batched_thumbnails_equal_pillows():
    """``make_thumbnails`` (Pillow's resampling as two matrix products over a whole batch) equals
    ``make_thumbnail`` (Pillow, image by image) byte for byte: down (Lanczos), up (bicubic, nearest),
    squares and oblongs, grey and colour."""
    from reportgen.images import make_thumbnail, make_thumbnails

    rng = np.random.default_rng(1)
    for h, w in [(28, 28), (8, 8), (9, 14), (20, 31), (33, 33), (64, 50), (100, 100), (255, 300)]:
        for size in (16, 32, 48):
            for shape in [(4, h, w), (4, h, w, 3)]:
                imgs = rng.integers(0, 256, shape, dtype=np.uint8)
                got = make_thumbnails(imgs, size)
                ref = np.stack([make_thumbnail(im, size) for im in imgs])
                assert got.shape == ref.shape and np.array_equal(got, ref), (shape, size)


def test_nearest_enlargement_is_pillows_at_every_side_and_size():
    """An enlargement of 2x or more is an index (``images.nearest_rows``), equal to Pillow's nearest
    filter byte for byte at every image side and thumbnail size a spec allows (8-128 px), including
    those where a source boundary falls exactly on an output pixel's centre (8 px to 20)."""
    from PIL import Image

    from reportgen.images import make_thumbnails, thumbnail_filter

    rng = np.random.default_rng(2)
    for size in range(8, 129):
        for side in range(1, size // 2 + 1):
            assert thumbnail_filter(side, size) == "nearest"
            imgs = rng.integers(0, 256, (2, side, side + 3, 3), dtype=np.uint8)
            ref = np.stack([np.asarray(Image.fromarray(im[:, 1 : 1 + side]).resize((size, size), 0)) for im in imgs])
            assert np.array_equal(make_thumbnails(imgs, size), ref), (side, size)
            assert np.array_equal(make_thumbnails(imgs[..., 0], size), ref[..., 0]), (side, size)


def test_device_thumbnails_equal_pillows():
    """Thumbnails made on the device (where the GPU's array batches already are) equal
    ``make_thumbnails`` and so Pillow's, byte for byte: down (Lanczos), up (bicubic), the same size,
    squares and oblongs, grey and colour; Pillow's nearest-neighbour upscales are left to the host."""
    from reportgen.images import make_thumbnails
    from reportgen.images.device import thumbnails_on_device

    rng = np.random.default_rng(2)
    for h, w in [(28, 28), (25, 25), (9, 14), (20, 31), (32, 32), (64, 50), (255, 300)]:
        for size in (16, 32, 48):
            for shape in [(5, h, w), (5, h, w, 3)]:
                imgs = rng.integers(0, 256, shape, dtype=np.uint8)
                got = thumbnails_on_device(torch.from_numpy(imgs), size)
                if min(h, w) * 2 <= size and min(h, w) != size:
                    assert got is None
                    continue
                ref = make_thumbnails(imgs, size)
                ref = np.repeat(ref[..., None], 3, axis=-1) if ref.ndim == 3 else ref
                assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), ref), (shape, size)


def test_device_thumbnails_in_an_extraction_equal_the_cpu_paths(effnet):
    """Real 25 px faces (scikit-image's LFW subset) through the device feeding: thumbnails made on
    the device, hashes on the host, both equal to the per-image path's."""
    from skimage.data import lfw_subset

    from reportgen.datasets.base import array_dataset

    faces = (lfw_subset() * 255).round().astype(np.uint8)
    ds = array_dataset("lfw", "npz", faces, np.arange(len(faces)) % 2, None, "lfw")
    idx = np.arange(0, len(faces), 3)
    cpu = _embed(None, ds, idx, effnet)
    dev = _embed(Feeding("device", "cpu"), ds, idx, effnet)
    assert np.array_equal(cpu.indices, dev.indices) and np.array_equal(cpu.hashes, dev.hashes)
    assert dev.thumbnails.shape == (len(idx), 32, 32, 3) and np.array_equal(cpu.thumbnails, dev.thumbnails)
    assert linear_cka(cpu.embeddings["global_pool"], dev.embeddings["global_pool"]) > 0.9999


def _embed(feeding: Feeding | None, ds, idx, effnet, **kw):
    layers = resolve_layers(effnet.module, [LayerSpec(name="blocks.4"), LayerSpec(name="global_pool")])
    return Extractor(effnet, layers, batch_size=64, feeding=feeding, **kw).run(ds, idx)


def test_device_feeding_gives_the_cpu_paths_embeddings(effnet):
    """An array dataset fed raw to the device (resized and normalised there) against Pillow in the
    workers: same samples, same thumbnails, embeddings that agree (CKA, kNN accuracy)."""
    ds = load_dataset(DigitsDataset(kind="digits"))
    idx = select_samples(ds, limit=400, method="stratified", seed=0).indices
    cpu = _embed(None, ds, idx, effnet)
    dev = _embed(Feeding("device", "cpu"), ds, idx, effnet)
    assert np.array_equal(cpu.indices, dev.indices) and np.array_equal(cpu.thumbnails, dev.thumbnails)
    assert np.array_equal(cpu.hashes, dev.hashes)  # exact duplicates are found the same way on either path
    y = ds.labels[idx]
    for layer in ("blocks.4", "global_pool"):
        a, b = cpu.embeddings[layer], dev.embeddings[layer]
        assert linear_cka(a, b) > 0.9999
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.999
        assert abs(knn_accuracy(exact_graph(a, 10), y, 10) - knn_accuracy(exact_graph(b, 10), y, 10)) <= 0.02


def test_jpeg_decoding_through_torchvision_matches_pillow(tmp_path, effnet):
    """The nvjpeg path (torchvision.io.decode_jpeg, run here on the CPU): same pixels as Pillow
    within JPEG rounding, a corrupt file skipped and listed, embeddings that agree."""
    from PIL import Image
    from skimage import data

    root = tmp_path / "jpegs"
    for c, img in (("cat", data.chelsea()), ("astro", data.astronaut()), ("coffee", data.coffee())):
        (root / c).mkdir(parents=True)
        for j in range(6):
            Image.fromarray(np.roll(img, 37 * j, axis=1)[:: 1 + j % 2, :: 1 + j % 3]).save(
                root / c / f"{j}.jpg", quality=90
            )
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    ds = load_dataset(ImageFolderDataset(kind="image_folder", path=root))
    prep = effnet.preprocess
    blobs = [torch.from_numpy(np.frombuffer(p.read_bytes(), np.uint8).copy()) for p in ds.paths]
    pixels, thumbs, failed = decode_on_device(blobs, prep, 32, device="cpu")
    assert [ds.ids[j] for j, _ in failed] == ["cat/broken.jpg"] and "cannot decode JPEG" in failed[0][1]
    good = [j for j in range(len(ds)) if ds.ids[j] != "cat/broken.jpg"]
    ref = np.stack([resize_crop(read_image_file(ds.paths[j]), prep) for j in good]).astype(np.float32)
    got = pixels.permute(0, 2, 3, 1).numpy()
    assert np.abs(got - ref).mean() < 0.5 and thumbs.shape == (len(good), 32, 32, 3)
    idx = np.arange(len(ds))
    cpu = _embed(None, ds, idx, effnet)
    gpu_way = _embed(Feeding("device", "device"), ds, idx, effnet)
    assert [ds.ids[i] for i, _ in gpu_way.bad] == ["cat/broken.jpg"] == [ds.ids[i] for i, _ in cpu.bad]
    assert np.array_equal(cpu.indices, gpu_way.indices)
    a, b = cpu.embeddings["global_pool"], gpu_way.embeddings["global_pool"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.995


def test_reduced_precision_is_refused_on_the_cpu_with_a_clear_message(effnet):
    layers = resolve_layers(effnet.module, [LayerSpec(name="global_pool")])
    with pytest.raises(
        ModelError, match="precision bf16 runs on a GPU only and this model runs on cpu; use precision: fp32"
    ):
        Extractor(effnet, layers, precision="bf16")


def test_feeding_is_chosen_by_device_and_data(tmp_path):
    digits = load_dataset(DigitsDataset(kind="digits"))
    assert choose_feeding(digits, "cpu") == Feeding("cpu", "cpu", "fp32")
    assert choose_feeding(digits, "cuda", "bf16") == Feeding(
        "device", "cpu", "bf16"
    )  # raw uint8 arrays resized on the GPU
    assert default_workers(100) == 0 and default_workers(10_000) == max(
        0, (len(__import__("os").sched_getaffinity(0)) - 1)
    )


def test_normalisation_on_the_device_equals_the_numpy_path():
    from reportgen.images.device import normalise_on_device

    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    prep = Preprocess(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 1.0)
    ref = np.stack([normalise(p, prep) for p in px])
    got = normalise_on_device(torch.from_numpy(px).permute(0, 3, 1, 2).float(), prep, channels_last=False).numpy()
    np.testing.assert_array_equal(got, ref)  # the same float32 operations: bit for bit


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_array_batches_equal_the_per_image_path(channels):
    """The GPU's reader of in-memory arrays (a slice per batch, thumbnails and hashes for the whole
    batch while the device computes) gives what the per-image path gives: grey, one-, three- and
    four-channel arrays."""
    from reportgen.datasets.base import array_dataset
    from reportgen.embed.feeding import PreparedImages, array_extras, array_pixels, collate

    rng = np.random.default_rng(0)
    shape = (70, 28, 20) if channels is None else (70, 28, 20, channels)
    ds = array_dataset("t", "npz", rng.integers(0, 256, shape, dtype=np.uint8), np.arange(70) % 3, None, "s")
    idx = rng.permutation(70)[:50]
    prep = Preprocess(32, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)
    for b in range(0, 50, 16):
        chunk = idx[b : b + 16]
        p1, t1, h1, _, _ = collate(
            [PreparedImages(ds, chunk, prep, 32, Feeding("device", "cpu"))[j] for j in range(len(chunk))]
        )
        pixels = array_pixels(ds, chunk)
        t2, h2 = array_extras(pixels, 32)
        rgb = pixels if pixels.ndim == 4 else np.repeat(pixels[..., None], 3, axis=-1)
        assert np.array_equal(p1.numpy(), rgb) and np.array_equal(t1, t2) and np.array_equal(h1, h2)


def test_lazy_thumbnails_of_an_image_array_are_made_a_batch_at_a_time_and_equal_pillows():
    """Thumbnails made on demand from a large input's image array (grey, RGB, upscaled 8 px) are
    made in batches and equal Pillow's image by image, in any order of rows asked for."""
    from reportgen.images import LazyThumbnails, make_thumbnail, to_rgb_uint8

    rng = np.random.default_rng(2)
    for shape in [(600, 28, 28), (200, 40, 30, 3), (100, 8, 8)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        rows = rng.permutation(len(a))[: len(a) // 2]
        lazy = LazyThumbnails(lambda i, a=a: to_rgb_uint8(a[i]), rows, 32, a)
        assert lazy._batched()
        ref = np.stack([make_thumbnail(to_rgb_uint8(a[r]), 32) for r in rows])
        assert (
            np.array_equal(lazy[:], ref)
            and np.array_equal(lazy[5:50:3], ref[5:50:3])
            and np.array_equal(lazy[np.array([7, 1, 7])], ref[[7, 1, 7]])
        )


def test_opencv_resizing_is_close_to_pillows_and_exact_for_nearest():
    """``resizer: opencv``: the same geometry (shorter side, centre crop), pixels within a few grey
    levels of Pillow's on average (its bicubic kernel is sharper; it shrinks by area averaging), and
    nearest-neighbour exactly Pillow's."""
    from skimage import data

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), data.astronaut(), data.chelsea(), data.coffee()]
    for interp, mean_tol in (("bicubic", 5), ("bilinear", 3), ("lanczos", 5), ("nearest", 0)):
        for img in images:
            prep = Preprocess(96, (0.5,) * 3, (0.5,) * 3, interp, 0.875)
            a = resize_crop(img, prep).astype(int)
            b = resize_crop(
                img,
                Preprocess(
                    *[getattr(prep, f) for f in ("input_size", "mean", "std", "interpolation", "crop_pct")], "opencv"
                ),
            ).astype(int)
            assert a.shape == b.shape == (96, 96, 3)
            assert np.abs(a - b).mean() <= mean_tol, (interp, img.shape, np.abs(a - b).mean())
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_the_opencv_resizer_has_its_own_key_close_embeddings_and_is_resized_on_the_cpu(tmp_path):
    from reportgen.pipeline import extract_embeddings
    from tests.conftest import EFFNET, make_spec

    def spec(resizer: str) -> dict:
        return {
            "title": "t",
            "dataset": {"kind": "digits", "limit": 400},
            "reducers": ["pca"],
            "output": {"dir": str(tmp_path / "out")},
            "cache_dir": str(tmp_path / "cache"),
            "models": [{**EFFNET, "input_size": 64, "resizer": resizer, "layers": ["blocks.4", "global_pool"]}],
        }

    _, sel, (pil,) = extract_embeddings(make_spec(spec("pillow")), progress=False)
    _, _, (cv,) = extract_embeddings(make_spec(spec("opencv")), progress=False)
    a, b = pil.embeddings, cv.embeddings
    assert (
        a.key != b.key and b.manifest["preprocess"]["resizer"] == "opencv" and "resizer" not in a.manifest["preprocess"]
    )
    np.testing.assert_array_equal(a.thumbnails, b.thumbnails)  # thumbnails do not depend on the model's resizing
    y = np.asarray(a.labels)
    for layer in ("blocks.4", "global_pool"):
        # 8 px digits enlarged 8x, where the two kernels differ most: measured CKA 0.968 / 0.951
        assert linear_cka(a.layers[layer], b.layers[layer]) > 0.9
        assert (
            abs(
                knn_accuracy(exact_graph(a.layers[layer], 10), y, 10)
                - knn_accuracy(exact_graph(b.layers[layer], 10), y, 10)
            )
            <= 0.03
        )
    assert (
        choose_feeding(load_dataset(DigitsDataset(kind="digits")), "cuda", resizer="opencv").resize == "cpu"
    )  # the device reproduces Pillow only


def test_opencv_not_installed_is_one_clear_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import EFFNET, write

    d = {
        "title": "t",
        "dataset": {"kind": "digits", "limit": 50},
        "reducers": ["pca"],
        "output": {"dir": str(tmp_path / "out")},
        "cache_dir": str(tmp_path / "cache"),
        "models": [{**EFFNET, "resizer": "opencv", "layers": ["global_pool"]}],
    }
    code = (
        "import sys; sys.modules['cv2'] = None\n"  # what Python sees when the package is absent
        "from reportgen.cli import main\n"
        f"sys.exit(main(['extract', {str(write(tmp_path, d))!r}, '-q']))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "models[].resizer: opencv needs OpenCV" in p.stderr and "pip install 'reportgen[opencv]'" in p.stderr
