"""Feeding the device: the GPU's way (uint8 to the device, antialiased resize and normalisation
there, JPEG decoding by torchvision.io) checked against the CPU path. The same functions run on
the CPU here, so the code a GPU runs is tested on this machine too."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.datasets import load_dataset, select_samples
from reportgen.datasets.digits import DigitsDataset
from reportgen.datasets.image_folder import ImageFolderDataset
from reportgen.errors import ModelError
from reportgen.extract import Extractor, Feeding, choose_feeding, decode_on_device, default_workers, resize_on_device, resolve_layers
from reportgen.images import Preprocess, normalise, read_image_file, resize_crop
from reportgen.kernels import knn_accuracy, linear_cka
from reportgen.neighbours import exact_graph
from reportgen.spec import LayerSpec


def test_device_resize_matches_pillow():
    """Pillow's resize reproduced on the device (same antialiased kernels, same per-pass rounding):
    within one grey level, up (8 px digits -> 96) and down (a 512 px photo -> 224, centre crop)."""
    from skimage import data

    digits = load_dataset(DigitsDataset(kind="digits"))
    cases = [(np.stack([digits.read(i) for i in range(200)]), Preprocess(96, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)),
             (data.astronaut()[None], Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)),
             (data.chelsea()[None], Preprocess(160, (0.5,) * 3, (0.5,) * 3, "bilinear", 0.9))]
    for images, prep in cases:
        ref = np.stack([resize_crop(im, prep) for im in images]).astype(np.float32)
        got = resize_on_device(torch.from_numpy(images).permute(0, 3, 1, 2).float(), prep).permute(0, 2, 3, 1).numpy()
        assert got.shape == ref.shape
        diff = np.abs(got - ref)
        assert diff.max() <= 2.0 and diff.mean() < 0.1 and (diff > 1).mean() < 1e-4, (diff.max(), diff.mean())


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
            Image.fromarray(np.roll(img, 37 * j, axis=1)[:: 1 + j % 2, :: 1 + j % 3]).save(root / c / f"{j}.jpg", quality=90)
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
    with pytest.raises(ModelError, match="precision bf16 runs on a GPU only and this model runs on cpu; use precision: fp32"):
        Extractor(effnet, layers, precision="bf16")


def test_feeding_is_chosen_by_device_and_data(tmp_path):
    digits = load_dataset(DigitsDataset(kind="digits"))
    assert choose_feeding(digits, "cpu") == Feeding("cpu", "cpu", "fp32")
    assert choose_feeding(digits, "cuda", "bf16") == Feeding("device", "cpu", "bf16")  # raw uint8 arrays resized on the GPU
    assert default_workers(100) == 0 and default_workers(10_000) == max(0, (len(__import__("os").sched_getaffinity(0)) - 1))


def test_normalisation_on_the_device_equals_the_numpy_path():
    from reportgen.extract import normalise_on_device

    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    prep = Preprocess(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 1.0)
    ref = np.stack([normalise(p, prep) for p in px])
    got = normalise_on_device(torch.from_numpy(px).permute(0, 3, 1, 2).float(), prep, channels_last=False).numpy()
    np.testing.assert_array_equal(got, ref)  # the same float32 operations: bit for bit
