"""Leakage through a resample: 2,000 Fashion-MNIST training images as PNG class folders, 500 test
images of which 25 are training images that went through a bilinear 28 -> 30 -> 28 px round trip
(as when two pipelines store one picture). The report must find them, and little else."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EFFNET, run, write

FASHION = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist is missing"
    ),
]
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def _read(name: str) -> np.ndarray:
    from reportgen.datasets.idx import parse_idx

    return parse_idx(gzip.decompress((FASHION / name).read_bytes()), source=name)


def test_resampled_copies_across_splits_are_found(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(11)
    xtr, ytr = _read("train-images-idx3-ubyte.gz"), _read("train-labels-idx1-ubyte.gz")
    xte, yte = _read("t10k-images-idx3-ubyte.gz"), _read("t10k-labels-idx1-ubyte.gz")
    tr = rng.choice(len(ytr), 2000, replace=False)
    te = rng.choice(len(yte), 475, replace=False)
    leaked = rng.choice(2000, 25, replace=False)
    for k, i in enumerate(tr):
        d = tmp_path / "train" / CLASSES[ytr[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(xtr[i]).save(d / f"tr{k:04d}.png")
    for k, i in enumerate(te):
        d = tmp_path / "test" / CLASSES[yte[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(xte[i]).save(d / f"te{k:04d}.png")
    for j in leaked:
        img = Image.fromarray(xtr[tr[j]]).resize((30, 30), Image.BILINEAR).resize((28, 28), Image.BILINEAR)
        img.save(tmp_path / "test" / CLASSES[ytr[tr[j]]] / f"leak{j:04d}.png")
    spec = {
        "title": "resampled leaks",
        "datasets": [
            {"kind": "image_folder", "path": str(tmp_path / "train"), "name": "train"},
            {"kind": "image_folder", "path": str(tmp_path / "test"), "name": "test"},
        ],
        "models": [{**EFFNET, "input_size": 32, "layers": [{"name": "global_pool", "reshape": "mean"}]}],
        "reducers": ["pca"],
        "report": {"slices": False, "describe": {"describers": []}},
        "output": {"dir": str(tmp_path / "out")},
        "cache_dir": str(tmp_path / "cache"),
    }
    code, _, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    pairs = s["leakage"][0]["pairs"]
    truth = {f"{CLASSES[ytr[tr[j]]]}/leak{j:04d}.png": f"{CLASSES[ytr[tr[j]]]}/tr{j:04d}.png" for j in leaked}
    right = [p for p in pairs if truth.get(p["id"]) == p["twin"]]
    recall, precision = len(right) / len(truth), len(right) / max(len(pairs), 1)
    print(f"resampled leaks: recall {recall:.2f}, precision {precision:.2f} ({len(pairs)} pairs)")
    assert recall >= 0.8 and precision >= 0.9, (recall, precision)


def test_mirrored_copies_are_found_when_the_spec_counts_them(tmp_path):
    """``report.mirrored_copies``: 20 test images that are training images flipped left to right,
    and 10 flipped copies inside the training set, are found, each marked mirrored in summary.json
    and in the report; the calibration says mirrored copies were counted."""
    from PIL import Image

    from reportgen.compute.twin_calibration import MIRRORED

    rng = np.random.default_rng(12)
    xtr, ytr = _read("train-images-idx3-ubyte.gz"), _read("train-labels-idx1-ubyte.gz")
    xte, yte = _read("t10k-images-idx3-ubyte.gz"), _read("t10k-labels-idx1-ubyte.gz")
    tr = rng.choice(len(ytr), 1000, replace=False)
    te = rng.choice(len(yte), 240, replace=False)
    leaked, copied = rng.choice(1000, 30, replace=False)[:20], rng.choice(1000, 30, replace=False)[20:]
    for split, rows, x, y, stem in (("train", tr, xtr, ytr, "tr"), ("test", te, xte, yte, "te")):
        for k, i in enumerate(rows):
            d = tmp_path / split / CLASSES[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(d / f"{stem}{k:04d}.png")
    for split, rows, stem in (("test", leaked, "leak"), ("train", copied, "mir")):
        for j in rows:
            Image.fromarray(np.ascontiguousarray(xtr[tr[j]][:, ::-1])).save(
                tmp_path / split / CLASSES[ytr[tr[j]]] / f"{stem}{j:04d}.png"
            )
    spec = {
        "title": "mirrored copies",
        "datasets": [
            {"kind": "image_folder", "path": str(tmp_path / "train"), "name": "train"},
            {"kind": "image_folder", "path": str(tmp_path / "test"), "name": "test"},
        ],
        "models": [{**EFFNET, "input_size": 32, "layers": [{"name": "global_pool", "reshape": "mean"}]}],
        "reducers": ["pca"],
        "report": {"slices": False, "describe": {"describers": []}, "mirrored_copies": True},
        "output": {"dir": str(tmp_path / "out")},
        "cache_dir": str(tmp_path / "cache"),
    }
    code, _, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    original = {j: f"{CLASSES[ytr[tr[j]]]}/tr{j:04d}.png" for j in np.r_[leaked, copied]}
    pairs = s["leakage"][0]["pairs"]
    truth = {f"{CLASSES[ytr[tr[j]]]}/leak{j:04d}.png": original[j] for j in leaked}
    right = [p for p in pairs if truth.get(p["id"]) == p["twin"]]
    # beyond the planted leaks, at most 2 % of the test images: Fashion-MNIST's own look-alikes
    # across its splits (3 here: at 0.42, 0.87 and 0.98 of the threshold, the second mirrored)
    assert len(right) >= 18 and len(pairs) - len(right) <= 0.02 * 260, (len(right), len(pairs))
    assert all(p["mirrored"] for p in right)
    audit = s["models"][0]["layers"][0]["audit"]
    assert MIRRORED in audit["near_recall_by_edit"] and "each pair compared both ways" in audit["calibration"]
    planted = {frozenset((original[j], f"{CLASSES[ytr[tr[j]]]}/mir{j:04d}.png")) for j in copied}
    near = {frozenset((p["a"], p["b"])): p["mirrored"] for p in audit["near_duplicates"]}
    assert len(planted & set(near)) >= 9 and all(near[p] for p in planted & set(near))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "the mirror image of" in html and ", mirrored</span>" in html and "or mirrored (image difference" in html
    assert "of 0 identical" not in html and "0.0000000" not in html  # no empty count, no float noise


def test_the_embedding_ratio_tells_a_copy_from_a_look_alike():
    """A copy sits on its original in the layer, far closer than any other image; a look-alike is one
    neighbour among several. Exact copies of either image do not count as its other neighbours."""
    from reportgen.compute.neighbours import exact_graph
    from reportgen.compute.twin_embedding import embedding_ratio

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    x[1] = x[0] + 0.01 * rng.normal(size=16)  # 1: an edited copy of 0
    x[2] = x[0]  # 2: an exact copy of 0 (same content hash)
    x[11:20] = x[10] + 0.3 * rng.normal(size=(9, 16))  # 10-19: a crowd of look-alikes
    hashes = np.arange(200 * 16, dtype=np.uint8).reshape(200, 16) * 0
    hashes[:, 0], hashes[:, 1] = np.arange(200) % 256, np.arange(200) // 256
    hashes[2] = hashes[0]
    for metric in ("cosine", "euclidean"):
        g = exact_graph(x.astype(np.float32), 10, metric=metric)
        pairs = np.array([[0, 1], [10, 11]])
        r = embedding_ratio(x, pairs, g.indices, g.distances, metric, hashes)
        assert r[0] < 0.1 and r[1] > 0.5, (metric, r)
        # without the hashes, the exact copy 2 is 0's next neighbour and the pair is no longer distinct
        assert embedding_ratio(x, pairs[:1], g.indices, g.distances, metric)[0] > 1
    # no other neighbour known (every neighbour is the partner): not judged
    lone = embedding_ratio(x, np.array([[0, 1]]), np.array([[1], [0]] + [[0]] * 198), np.ones((200, 1)), "euclidean")
    assert np.isnan(lone[0])
