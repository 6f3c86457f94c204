"""Edge cases of the report: degenerate data must give a report with stated notes, not a crash."""

import json

import numpy as np
import pytest

from tests.conftest import run, small_spec, write


def _npz(tmp, images, labels, names=None):
    np.savez(tmp / "d.npz", images=images, labels=labels)
    d = {"kind": "npz", "path": str(tmp / "d.npz")}
    if names:
        d["class_names"] = names
    return d


def test_identical_images_zero_variance(tmp_path):
    d = small_spec(
        tmp_path,
        dataset=_npz(tmp_path, np.full((12, 8, 8), 128, np.uint8), np.arange(12) % 2),
        reducers=["pca", "tsne"],
    )
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][0]
    assert layer["pca"]["total_variance"] == 0 and all(v == 0 for v in layer["pca"]["explained_variance_ratio"])
    assert any("zero variance" in n for n in layer["notes"]) and any("tsne skipped" in n for n in layer["notes"])
    assert "zero variance" in (tmp_path / "out" / "report.html").read_text()


def test_tiny_data_lowers_perplexity_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    d = small_spec(
        tmp_path,
        dataset=_npz(tmp_path, rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), np.r_[np.zeros(11, int), 1]),
        reducers=["pca", {"tsne": {"perplexity": 30}}],
    )
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    notes = s["models"][0]["layers"][0]["maps"]["tsne"]["notes"]
    assert notes and "perplexity lowered from 30" in notes[0]
    assert s["models"][0]["layers"][0]["maps"]["tsne"]["params"]["perplexity"] < (12 - 1) / 3
    assert s["dataset"]["used_per_class"] == {"0": 11, "1": 1}  # a class with one sample is fine


def test_two_samples_in_total(tmp_path):
    d = small_spec(
        tmp_path,
        dataset=_npz(
            tmp_path, np.stack([np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)]), np.array([0, 1])
        ),
    )
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_thousand_classes_stay_legible(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    images = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(n) % 1000
    d = small_spec(
        tmp_path, dataset=_npz(tmp_path, images, labels, [f"class <{i}>" for i in range(1000)]), reducers=["pca"]
    )
    d["report"] = {"gallery_components": 2, "hard_samples": 3}
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    assert "class &lt;999&gt;" in html and "names sit at class centroids (the 60 largest classes)" in html
    # the neighbours table: 50 of the 1,000 classes' typical samples (their rows were 7.7 of the page's
    # 22 MB per layer), and the page within the default 10 MB at the first step of the size ladder
    assert html.count("of 50 of the 1,000 classes") == 2  # one table per layer
    run_info = json.loads((tmp_path / "out" / "run.json").read_text())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert run_info["html_bytes"] <= 10_000_000 and summary["html"]["reductions"] == []
    from reportgen.figures import palette

    cols = palette(1000)
    assert len({tuple(c) for c in cols}) == 1000  # every class its own colour
