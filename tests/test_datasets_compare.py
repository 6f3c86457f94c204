"""Comparing datasets through one model (here: raw pixels, `models: none`)."""

import json

import numpy as np
import pytest

from reportgen.compute.kernels import domain_auc, mmd_permutation_test
from tests.conftest import run, write


def test_mmd_and_auc_tell_shift_from_no_shift():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    same, p_same = mmd_permutation_test(a, b, permutations=100)
    shifted, p_shift = mmd_permutation_test(a, c, permutations=100)
    assert p_same > 0.05 and p_shift < 0.02 and shifted > same
    assert abs(domain_auc(a, b) - 0.5) < 0.1 and domain_auc(a, c) > 0.8


@pytest.mark.slow
def test_clean_vs_corrupted_digits_through_raw_pixels(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * 255 / 16).astype(np.uint8)
    np.savez(tmp_path / "clean.npz", images=imgs[:300], labels=d.target[:300])
    noisy = np.clip(
        imgs[300:600].astype(int) + np.random.default_rng(0).integers(-90, 90, imgs[300:600].shape), 0, 255
    ).astype(np.uint8)
    np.savez(tmp_path / "noisy.npz", images=noisy, labels=d.target[300:600])
    np.savez(tmp_path / "held.npz", images=imgs[600:900], labels=d.target[600:900])
    spec = {
        "title": "clean vs corrupted",
        "datasets": [
            {"kind": "npz", "path": "clean.npz", "name": "clean"},
            {"kind": "npz", "path": "noisy.npz", "name": "noisy"},
            {"kind": "npz", "path": "held.npz", "name": "held-out clean"},
        ],
        "models": "none",
        "reducers": ["pca", {"tsne": {"perplexity": 20, "n_iter": 250}}],
        "report": {"gallery_components": 2},
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"][0]["arch"] == "pixels"
    by = {r["dataset"]: r for r in s["dataset_shift"]}
    assert by["noisy"]["p_value"] < 0.05 and by["noisy"]["domain_auc"] > 0.9
    assert (
        by["held-out clean"]["domain_auc"] < by["noisy"]["domain_auc"]
        and by["held-out clean"]["mmd2"] < by["noisy"]["mmd2"]
    )
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="compare_datasets"' in html and "datasets--pixels--pixels-tsne.png" in html
