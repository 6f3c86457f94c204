"""Every example spec is run: the demo in full (it is what `make demo` builds), the others trimmed."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run

ROOT = Path(__file__).parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_demo_report_has_every_section_and_fits_its_budget(tmp_path):
    import yaml

    code, out, err = run("demo", "--out", str(tmp_path / "demo"), "--cache-dir", str(tmp_path / "cache"), "-q")
    assert code == 0, err
    html = (tmp_path / "demo" / "report.html").read_text()
    budget = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())["output"]["max_html_mb"]
    assert (tmp_path / "demo" / "report.html").stat().st_size <= budget * 1_000_000
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # at full size: the interactive maps and a card for every sample shown (what the budget pays for)
    assert not s["html"]["reductions"], s["html"]["reductions"]
    assert '<script type="application/json" id="rg-data">' in html
    assert s["cards"] and all(f'id="{anchor[1:]}"' in html for anchor in list(s["cards"].values())[:50])
    layers = s["models"][0]["layers"]
    assert [l["layer"] for l in layers] == ["blocks.2", "blocks.4", "global_pool"]
    for l in layers:
        assert set(l["maps"]) == {"pca", "tsne", "umap"} and len(l["extremes"]) == 10 and l["neighbours"] and l["axes"]
        anchor = f"l-effnet--{l['layer']}"
        section = html[html.index(f'id="{anchor}"') :]
        for heading in (
            "Principal components",
            "Extremity galleries",
            "2-D maps",
            "Nearest neighbours",
            "Hard samples and outliers",
            "Custom axes",
        ):
            assert heading in section[: section.find("<section", 10) if "<section" in section[10:] else None]
        for m in ("pca", "tsne", "umap"):
            for kind in ("scatter", "mosaic", "grid"):
                assert (tmp_path / "demo" / "figures" / f"effnet--{l['layer']}--{m}-{kind}.png").exists()
    assert layers[2]["metrics"]["knn_accuracy"] > 0.85
    for part in ("Summary", "Contents", "Provenance", "SHA-256", "fingerprint"):
        assert part in html


def test_image_folder_example(tmp_path):
    from PIL import Image
    from skimage import data

    shutil.copy(ROOT / "examples" / "image_folder.yaml", tmp_path / "spec.yaml")
    for cls, img in (("cat", data.chelsea()), ("coffee", data.coffee()), ("rocket", data.rocket())):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for j in range(6):
            Image.fromarray(img).rotate(12 * j).crop((20 * j, 0, img.shape[1] - 20 * j, img.shape[0])).save(
                tmp_path / "photos" / cls / f"{j}.jpg"
            )
    code, out, err = run(
        "build",
        str(tmp_path / "spec.yaml"),
        "-q",
        "--set",
        "models[0].input_size=96",
        "--set",
        "reducers=[pca, {tsne: {perplexity: 4}}]",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert code == 0, err
    s = json.loads((tmp_path / "reports" / "photos" / "summary.json").read_text())
    assert s["dataset"]["samples_used"] == 18 and s["models"][0]["layers"][1]["metrics"]["knn_accuracy"] == 1.0


@pytest.mark.skipif(
    not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed (.ci/run installs it as root)"
)
@pytest.mark.slow
def test_fashion_mnist_example(tmp_path):
    code, out, err = run(
        "build",
        str(ROOT / "examples" / "fashion_mnist.yaml"),
        "-q",
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "dataset.limit=600",
        "--set",
        "reducers=[pca]",
        "--set",
        "models[0].layers=[blocks.4, global_pool]",
    )
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["dataset"]["classes"][0] == "T-shirt/top" and s["models"][0]["layers"][1]["metrics"]["knn_accuracy"] > 0.7


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_ci_example_gates(tmp_path):
    code, out, err = run(
        "build",
        str(ROOT / "examples" / "ci" / "review.yaml"),
        "--out",
        str(tmp_path / "review"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "reducers=[pca, {tsne: {perplexity: 30, n_iter: 250}}]",
    )
    assert code == 0, err
    s = json.loads((tmp_path / "review" / "summary.json").read_text())
    skipped = [c for c in s["checks"] if c["skipped"]]
    assert len(skipped) == 2 and "no baseline" in skipped[0]["message"]  # first run: nothing to compare against
    assert all(c["passed"] for c in s["checks"])
    code, out, err = run(
        "build",
        str(ROOT / "examples" / "ci" / "review.yaml"),
        "--out",
        str(tmp_path / "again"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "reducers=[pca, {tsne: {perplexity: 30, n_iter: 250}}]",
        "--baseline",
        str(tmp_path / "review" / "summary.json"),
    )
    assert code == 0 and "checks: 6 of 6 passed" in out, out + err
    text = (ROOT / "examples" / "ci" / "model-review.yml").read_text()
    assert "reportgen build" in text and "upload-artifact" in text and "checks.xml" in text
