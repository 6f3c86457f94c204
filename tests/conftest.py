"""Shared fixtures and helpers: real model (packaged EfficientNet-Lite0), real data (scikit-learn
digits), the CLI called in-process."""

from __future__ import annotations

import io
import os
from pathlib import Path

from reportgen.machine import cores  # imports nothing native

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # `make test` runs pytest-xdist workers side by side: each gets its
    # share of the cores for torch, BLAS and OpenMP, set before NumPy loads OpenBLAS (which reads its count once, at
    # load) and inherited by subprocess builds, so the workers do not oversubscribe the machine
    _share = max(1, cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_share))

import numpy as np  # after the thread share
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

try:  # CI (CI=1, as .ci/run sets it) replays the same fuzz examples every run; a developer's run explores new ones
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:
    pass

from reportgen.cli import main
from reportgen.spec import loads_spec

EFFNET = {
    "name": "effnet",
    "timm": "tf_efficientnet_lite0",
    "weights": "efficientnet_lite0",
    "input_size": 96,
    "crop_pct": 1.0,
    "batch_size": 100,
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


# ----------------------------------------------------------------------------- CLI helpers


def run(*argv):
    """``reportgen ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def small_spec(tmp: Path, **over) -> dict:
    d = {
        "title": "cli",
        "dataset": {"kind": "digits", "limit": 40},
        "models": [
            {
                "name": "small",
                "factory": "tests.netzoo:Small",
                "input_size": 16,
                "batch_size": 16,
                "layers": ["conv", "pool"],
            }
        ],
        "reducers": ["pca"],
        "output": {"dir": str(tmp / "out")},
        "cache_dir": str(tmp / "cache"),
    }
    for k, v in over.items():
        d[k] = v
    return d


def write(tmp: Path, d: dict | str, name: str = "spec.yaml") -> Path:
    p = tmp / name
    p.write_text(d if isinstance(d, str) else yaml.safe_dump(d, allow_unicode=True))
    return p


def corrupt_folder(tmp: Path) -> Path:
    from PIL import Image
    from skimage import data

    root = tmp / "imgs"
    for c, img in (("cat", data.chelsea()), ("astro", data.astronaut())):
        (root / c).mkdir(parents=True)
        for j in range(4):
            Image.fromarray(np.roll(img[::8, ::8], 9 * j, axis=0)).save(root / c / f"{j}.png")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return root


@pytest.fixture(scope="session")
def effnet():
    from reportgen.models import load_model
    from reportgen.spec import ModelSpec

    return load_model(ModelSpec(**EFFNET, layers=["global_pool"]))


def assert_same_embeddings(a: np.ndarray, b: np.ndarray) -> None:
    """Two engines' embeddings of the same samples: equal up to float32 arithmetic in another order
    (another thread count or batch split moves a value by a few units in the last place of the
    layer's largest values), far below what another sample or row order would move."""
    scale = float(np.abs(b).max()) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1e-6))


def stored(res, tmp: Path, model: int = 0):
    """A build's embeddings of one model, read back from its store (``tmp / "cache"``)."""
    from reportgen.store import EmbeddingStore

    return EmbeddingStore(tmp / "cache").load(res.models[model].embeddings_key)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One real build (300 digits, 2 layers, PCA + t-SNE), shared by the report tests."""
    from reportgen.pipeline import build

    tmp = tmp_path_factory.mktemp("built")
    spec = make_spec(spec_dict(tmp))
    result = build(spec, progress=False)
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


#: Lines tests want shown at the end of the run (pytest captures their prints): a test records them
#: with ``record_property("summary_line", text)``, which reaches this process from an xdist worker.
SUMMARY_LINES: list[str] = []
#: Outcome of every bad-input catalogue case that ran (node id -> passed), from pytest's own reports,
#: so the closing line does not depend on test order or on which tests were selected.
_CATALOGUE: dict[str, bool] = {}


def pytest_runtest_logreport(report):
    SUMMARY_LINES.extend(v for k, v in report.user_properties if k == "summary_line" and report.when == "call")
    if "test_bad_inputs.py::test_bad_input[" in report.nodeid and (report.when == "call" or report.failed):
        _CATALOGUE[report.nodeid] = _CATALOGUE.get(report.nodeid, True) and report.passed


def pytest_terminal_summary(terminalreporter):
    if _CATALOGUE:
        clean = sum(_CATALOGUE.values())
        terminalreporter.write_line(
            f"bad-input catalogue: {len(_CATALOGUE)} bad inputs tried, {clean} gave a clean error (or a stated "
            "handling), "
            "a documented exit code and no partial output"
        )
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)
