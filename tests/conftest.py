"""Shared fixtures: real model (packaged EfficientNet-Lite0), real data (scikit-learn digits)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from reportgen.spec import loads_spec  # noqa: E402

EFFNET = {
    "name": "effnet", "timm": "tf_efficientnet_lite0", "weights": "efficientnet_lite0",
    "input_size": 96, "crop_pct": 1.0, "batch_size": 100,
}


def spec_dict(tmp: Path, **over) -> dict:
    """A small, fast spec on digits; keyword arguments replace top-level keys."""
    d = {
        "title": "test report",
        "seed": 0,
        "dataset": {"kind": "digits", "limit": 300},
        "models": [{**EFFNET, "layers": ["blocks.2", {"name": "global_pool", "reshape": "mean"}]}],
        "reducers": [{"pca": {"n_components": 8}}, {"tsne": {"perplexity": 20, "n_iter": 250}}],
        "report": {"gallery_size": 5, "gallery_components": 4, "axes": [["3", "8"]], "mosaic_cap": 300},
        "output": {"dir": str(tmp / "out")},
        "cache_dir": str(tmp / "cache"),
    }
    d.update(over)
    return d


def make_spec(d: dict):
    import yaml

    return loads_spec(yaml.safe_dump(d))


@pytest.fixture(scope="session")
def effnet():
    from reportgen.models import load_model
    from reportgen.spec import ModelSpec

    return load_model(ModelSpec(**EFFNET, layers=["global_pool"]))


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One real build (300 digits, 2 layers, PCA + t-SNE), shared by the report tests."""
    from reportgen.pipeline import build

    tmp = tmp_path_factory.mktemp("built")
    spec = make_spec(spec_dict(tmp))
    result = build(spec, spec_text="title: test", progress=False)
    return result, tmp


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A folder of real photos (scikit-image samples) in many formats and modes, two classes."""
    from PIL import Image
    from skimage import data

    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "rocks").mkdir(parents=True)
    cat = Image.fromarray(data.chelsea())
    rock = Image.fromarray(data.astronaut())
    cat.save(root / "cats" / "rgb.jpg")
    cat.convert("L").save(root / "cats" / "grey.png")
    cat.convert("RGBA").save(root / "cats" / "rgba.png")
    cat.convert("P").save(root / "cats" / "palette.bmp")
    cat.save(root / "cats" / "photo.webp")
    rock.save(root / "rocks" / "a.jpg")
    rock.convert("CMYK").save(root / "rocks" / "cmyk.jpg")
    grey16 = (np.asarray(rock.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "rocks" / "sixteen.png")
    rock.resize((40, 30)).save(root / "rocks" / "small.png")
    return root


#: Lines tests want shown at the end of the run (pytest captures their prints).
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    from tests import test_bad_inputs

    if test_bad_inputs.RESULTS:
        clean = sum(ok for _, ok in test_bad_inputs.RESULTS)
        SUMMARY_LINES.insert(0, f"bad-input catalogue: {len(test_bad_inputs.RESULTS)} bad inputs tried, {clean} gave a clean error "
                                f"(or a stated handling), a documented exit code and no partial output")
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)
