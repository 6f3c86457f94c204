"""The Python API's manners: a build leaves the caller's process as it found it (environment,
RNGs, threads, warnings, loggers - a TorchScript build included), takes ``str`` paths, imports no
model library when nothing needs a model, and the report shows the spec that was built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EFFNET, make_spec, run, small_spec, write

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the caller's process


def _hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def one_torch_thread():
    """The caller's choice of one torch thread, for one test: the worker gets its own count back, pass or fail."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_python_api_leaves_the_callers_process_as_it_found_it(tmp_path, one_torch_thread):
    """A build with UMAP and a TorchScript-frozen graph (``jit: true``): torch.jit.freeze sets
    TORCHINDUCTOR_CACHE_DIR for the whole process, which the build must not leave behind; numba's
    OpenMP layer (UMAP) sets the shared thread pool to every core, which a caller's one thread must survive."""
    import logging
    import warnings

    import sklearn  # noqa: F401 - the libraries' own import-time settings (scikit-learn sets KMP_* variables,
    import timm  # noqa: F401   timm's torch imports set TORCHINDUCTOR_CACHE_DIR) are theirs: loaded first,
    import torch  # they are part of the process reportgen is handed
    import umap  # noqa: F401
    from PIL import Image, ImageFile

    from reportgen.pipeline import build

    assert torch.get_num_threads() == 1  # the caller's choice (numba's UMAP layer once reset it to every core)
    big = np.ones(200 << 17)  # 200 MB touched, then freed: the peak-RSS mark stays above what follows
    del big
    hwm = _hwm_mb()
    before = {
        "env": dict(os.environ),
        "pil": (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES),
        "threads": torch.get_num_threads(),
        "torch_rng": torch.get_rng_state().clone(),
        "np_rng": np.random.get_state()[1].copy(),
        "warnings": list(warnings.filters),
        "loggers": (
            logging.getLogger().handlers[:],
            logging.getLogger("reportgen").handlers[:],
            logging.getLogger("reportgen").level,
        ),
        "cwd": os.getcwd(),
        "path": list(sys.path),
    }
    spec = make_spec(
        {
            **small_spec(tmp_path),
            "reducers": ["pca", {"umap": {"n_neighbors": 5}}],
            "models": [{**EFFNET, "input_size": 32, "jit": True, "layers": ["global_pool"]}],
        }
    )
    result = build(spec, progress=False)
    assert result.models[0].model.feeding  # it ran the model (the graph frozen on the first batch)
    assert dict(os.environ) == before["env"]  # no NUMBA_CACHE_DIR, no MPLBACKEND
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before["pil"]
    assert torch.get_num_threads() == before["threads"] and torch.equal(torch.get_rng_state(), before["torch_rng"])
    assert np.array_equal(np.random.get_state()[1], before["np_rng"])
    assert list(warnings.filters) == before["warnings"]
    assert (
        logging.getLogger().handlers,
        logging.getLogger("reportgen").handlers,
        logging.getLogger("reportgen").level,
    ) == before["loggers"]
    assert os.getcwd() == before["cwd"] and sys.path == before["path"]
    assert _hwm_mb() >= hwm - 1  # the kernel's peak-RSS mark was not reset (/proc/self/clear_refs)


FRESH = r"""
import json, os, sys
before = dict(os.environ)
from reportgen.pipeline import build
from reportgen.spec import load_spec
build(load_spec(sys.argv[1]), progress=False)
changed = set(before) ^ set(os.environ) | {k for k in before if os.environ.get(k) != before[k]}
print("CHANGED " + json.dumps({k: os.environ.get(k) for k in changed}))
"""


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_a_build_leaves_a_fresh_processs_environment_as_it_found_it(tmp_path):
    """In a process that has not imported timm or torch: importing timm sets TORCHINDUCTOR_CACHE_DIR,
    freezing a graph may too; after the build, the environment is what it was."""
    d = {**small_spec(tmp_path), "models": [{**EFFNET, "input_size": 32, "jit": True, "layers": ["global_pool"]}]}
    p = subprocess.run(
        [sys.executable, "-c", FRESH, str(write(tmp_path, d))], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    changed = json.loads(next(l for l in p.stdout.splitlines() if l.startswith("CHANGED "))[8:])
    assert changed == {}


def test_the_cli_does_its_process_housekeeping(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    code = (
        "import os, sys; from reportgen.cli import main; main(['--version']); print(os.environ.get('NUMBA_CACHE_DIR', "
        "'unset'))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "XDG_CACHE_HOME": str(tmp_path)},
        timeout=120,
    )
    assert p.stdout.splitlines()[-1] == str(tmp_path / "reportgen" / "numba")


# ----------------------------------------------------------------------------- rebuilds


REBUILD = r"""
import json, sys
from reportgen.pipeline import build
from reportgen.spec import load_spec
res = build(load_spec(sys.argv[1], overrides=sys.argv[2:]), progress=False)
loaded = {"torch": "torch" in sys.modules, "timm": "timm" in sys.modules}
print("RESULT " + json.dumps({**loaded, "forward": res.forward_calls, "fits": res.reducer_fits}))
"""


@pytest.mark.slow
def test_a_rebuild_that_needs_no_model_imports_no_model_library(tmp_path):
    d = {
        "title": "first",
        "dataset": {"kind": "digits", "limit": 60},
        "models": [{**EFFNET, "input_size": 32, "layers": ["blocks.2", "global_pool"]}],
        "reducers": ["pca", {"tsne": {"perplexity": 10, "n_iter": 100}}],
        "output": {"dir": str(tmp_path / "out")},
        "cache_dir": str(tmp_path / "cache"),
    }
    spec = write(tmp_path, d)

    def child(*overrides):
        p = subprocess.run(
            [sys.executable, "-c", REBUILD, str(spec), *overrides],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])

    assert child() == {"torch": True, "timm": True, "forward": 1, "fits": 2}  # 60 images: one batch
    assert child("title=renamed", "report.gallery_size=3") == {"torch": False, "timm": False, "forward": 0, "fits": 0}
    assert child("reducers[1].tsne.perplexity=12") == {"torch": False, "timm": False, "forward": 0, "fits": 2}


def test_build_takes_str_paths(tmp_path):
    from reportgen.pipeline import build

    spec = make_spec(small_spec(tmp_path))
    res = build(spec, output_dir=str(tmp_path / "as-str"), cache_dir=str(tmp_path / "c"), progress=False)
    assert (
        res.output_dir == tmp_path / "as-str"
        and (tmp_path / "as-str" / "report.html").exists()
        and (tmp_path / "c" / "embeddings").is_dir()
    )
    base = str(tmp_path / "as-str" / "summary.json")
    d = small_spec(tmp_path, checks=[{"metric": "knn_accuracy", "max_drop": 0.5}])
    again = build(
        make_spec(d),
        output_dir=os.fsencode(tmp_path / "bytes-path").decode(),
        cache_dir=tmp_path / "c",
        baseline=base,
        progress=False,
    )
    assert again.checks and all(c.passed and c.baseline is not None for c in again.checks)
    import reportgen

    assert reportgen.load_spec(str(write(tmp_path, small_spec(tmp_path)))).title == "cli"


def test_the_report_shows_the_spec_that_was_built(tmp_path):
    p = write(tmp_path, small_spec(tmp_path))
    code, out, err = run("build", str(p), "-q", "--set", "dataset.limit=30", "--set", "title=overridden <b>")
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    spec_part = html.split("<h3>Spec</h3>")[1]
    assert "limit: 30" in spec_part and "limit: 40" not in spec_part  # the effective spec, not the file on disk
    assert "2 override(s) given on the command line" in spec_part and "--set dataset.limit=30" in spec_part
    assert "overridden &lt;b&gt;" in spec_part
    code, out, err = run("build", str(p), "-q")
    spec_part = (tmp_path / "out" / "report.html").read_text().split("<h3>Spec</h3>")[1]
    assert "limit: 40" in spec_part and "override" not in spec_part
