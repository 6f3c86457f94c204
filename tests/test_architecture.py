"""The architecture's promises: plug-ins from a user's own file, one-way imports, caches that know
the code, a Python API that leaves the caller's process as it found it, paths as str."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from reportgen.analyses import LayerAnalysis, LayerInput, register_analysis, unregister_analysis
from reportgen.reducers import FittedMap, Reducer, ReducerParams, register_reducer, unregister_reducer
from reportgen.results import Finding, Samples
from tests.conftest import EFFNET, make_spec, run, small_spec, write

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a user's reducer


class IsomapParams(ReducerParams):
    """scikit-learn's Isomap, declared in this test file only."""

    method: Literal["isomap"] = "isomap"
    n_neighbors: int = Field(10, ge=2)


class IsomapReducer(Reducer):
    name = "isomap"
    title = "Isomap (scikit-learn)"
    Params = IsomapParams

    def fit(self, x: np.ndarray, *, seed: int) -> FittedMap:
        from sklearn.manifold import Isomap

        iso = Isomap(n_neighbors=self.params.n_neighbors, n_components=2)
        coords = iso.fit_transform(np.asarray(x, np.float64))
        return FittedMap(coords.astype(np.float32), {"n_neighbors": self.params.n_neighbors}, transformer=iso.transform)


@pytest.fixture
def isomap():
    register_reducer(IsomapReducer)
    yield IsomapReducer
    unregister_reducer("isomap")


def test_a_reducer_from_the_users_own_file(isomap, tmp_path):
    d = small_spec(
        tmp_path,
        reducers=["pca", {"isomap": {"n_neighbors": 8}}],
        checks=[{"metric": "trustworthiness_isomap", "min": 0.5}, {"metric": "continuity_isomap", "min": 0.5}],
    )
    d["dataset"]["limit"] = 120
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][1]
    assert layer["maps"]["isomap"]["params"] == {"n_neighbors": 8}
    assert (
        0.5 < layer["metrics"]["trustworthiness_isomap"] <= 1 and layer["metrics"]["maps"]["isomap"]["samples"] == 120
    )
    assert [c["metric"] for c in s["checks"]] == ["trustworthiness_isomap"] * 2 + ["continuity_isomap"] * 2 and all(
        c["passed"] for c in s["checks"]
    )
    figures = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert {
        "small--pool--isomap-scatter.png",
        "small--pool--isomap-mosaic.png",
        "small--pool--isomap-grid.png",
    } <= figures
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Isomap (scikit-learn)" in html and "trust. isomap" in html
    # the spec's schema and its errors know it too
    schema = json.dumps(__import__("reportgen.spec", fromlist=["json_schema"]).json_schema())
    assert "IsomapParams" in schema and "trustworthiness_isomap" in schema
    d["reducers"] = ["pca", {"isomap": {"n_neighbours": 8}}]
    code, _, err = run("validate", str(write(tmp_path, d)))
    assert code == 2 and "reducers[1].isomap.n_neighbours: unknown key; did you mean 'n_neighbors'?" in err


def test_unknown_check_metric_names_the_registered_ones(isomap, tmp_path):
    d = small_spec(tmp_path, checks=[{"metric": "trustworthines_isomap", "min": 0.5}])
    code, _, err = run("validate", str(write(tmp_path, d)))
    assert code == 2 and "checks[0].metric" in err and "did you mean 'trustworthiness_isomap'" in err


# ----------------------------------------------------------------------------- a user's analysis


@dataclass(frozen=True, eq=False)
class NormFinding(Finding):
    norms: np.ndarray  # (C,) mean L2 norm of each class's embeddings


class ClassNorms(LayerAnalysis):
    """How long each class's embedding vectors are: a section declared in this test file only."""

    name = "class_norms"
    title = "Embedding norms per class"
    template = "sections/class_norms.html"  # in the user's template folder (report.templates)
    metrics = {"mean_norm": "Mean L2 norm of the embeddings."}

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> NormFinding:
        n = np.linalg.norm(np.asarray(layer.x, np.float64), axis=1)
        return NormFinding(np.asarray([n[layer.labels == c].mean() for c in range(layer.n_classes)]))

    def metric_values(self, f: NormFinding) -> dict:
        return {"mean_norm": float(f.norms.mean())}

    def summary(self, f: NormFinding, samples: Samples) -> dict:
        return {"class_norms": {c: float(v) for c, v in zip(samples.class_names, f.norms)}}

    def context(self, f: NormFinding, view) -> dict:
        return {
            "rows": [{"name": c, "norm": float(v)} for c, v in zip(view.class_names, f.norms)],
            "note": "<b>not bold</b>",
        }


TEMPLATE = """<h3 id="{{ anchor }}">Embedding norms</h3><p class="m">{{ s.note }}</p>
<table>{% for r in s.rows %}<tr><td>{{ r.name }}</td><td class="n">{{ r.norm|num(2) }}</td></tr>{% endfor %}</table>
"""


def test_an_analysis_section_from_the_users_own_file(tmp_path):
    templates = tmp_path / "my-templates" / "sections"
    templates.mkdir(parents=True)
    (templates / "class_norms.html").write_text(TEMPLATE)
    register_analysis(ClassNorms)
    try:
        d = small_spec(tmp_path, checks=[{"metric": "mean_norm", "layer": "pool", "min": 0.0}])
        d["report"] = {"templates": "my-templates"}  # relative to the spec's folder
        code, out, err = run("build", str(write(tmp_path, d)), "-q")
    finally:
        unregister_analysis("class_norms")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][1]
    assert set(layer["class_norms"]) == set(s["dataset"]["classes"]) and layer["metrics"]["mean_norm"] > 0
    assert s["checks"][0]["passed"] and s["checks"][0]["metric"] == "mean_norm"
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="l-small--pool-class_norms"' in html and "Embedding norms" in html
    assert (
        "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold</b>" not in html
    )  # autoescape holds in the user's template
    assert "default-src 'none'" in html.replace("&#39;", "'")


def test_a_template_folder_overrides_a_built_in_section(tmp_path):
    (tmp_path / "brand" / "sections").mkdir(parents=True)
    (tmp_path / "brand" / "sections" / "metrics.html").write_text(
        '<p class="brand">ACME model review · kNN {{ s.knn|num }} · {{ l.layer }}</p>\n'
    )
    d = small_spec(tmp_path)
    d["report"] = {"templates": str(tmp_path / "brand")}
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count('<p class="brand">ACME model review') == 2 and "linear probe" not in html.split('id="data"')[1]


# ----------------------------------------------------------------------------- contracts


def _layer_input(n: int = 120, d: int = 16, seed: int = 0):
    from reportgen.kernels import STAT_NAMES, image_statistics
    from reportgen.neighbours import exact_graph
    from reportgen.pca import fit_pca
    from reportgen.results import MapResult
    from reportgen.spec import ReportOptions

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = (rng.normal(size=(n, d)) + labels[:, None] * 2.0).astype(np.float32)
    thumbs = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    thumbs[-1] = thumbs[0]  # one exact duplicate
    from reportgen.images import image_hash
    from reportgen.twins import Calibration, TwinData, signatures

    hashes = np.frombuffer(b"".join(image_hash(t) for t in thumbs), np.uint8).reshape(n, 16)
    samples = Samples(
        tuple(f"s{i}" for i in range(n)), labels, ("a", "b", "c"), thumbs, image_statistics(thumbs), hashes=hashes
    )
    pca = fit_pca(x, 10)
    opts = ReportOptions(axes=[("a", "c")], gallery_components=3, probe_cap=100)
    maps = {"pca": MapResult("pca", "PCA", pca.scores[:, :2].astype(np.float32), {}, (), "")}
    assert len(STAT_NAMES) == samples.image_stats.shape[1]
    from reportgen.neighbours import GraphQuality

    return LayerInput(
        "m",
        "l",
        x,
        samples,
        pca,
        5,
        exact_graph(x, 60, metric="cosine"),
        GraphQuality("exact", 1.0, 0, 60),
        maps,
        opts,
        0,
        lambda kind, parts, compute: compute(),
        audit=True,
        twins=TwinData(signatures(thumbs), Calibration(0.05, 0, 0.05, "test")),
    )


def test_every_registered_layer_analysis_meets_the_contract():
    """Each analysis: a frozen finding, JSON-ready summary and metrics, its metrics named, a section
    that renders with its own template."""
    import dataclasses

    from reportgen.analyses import layer_analyses, run_order
    from reportgen.render import environment

    layer = _layer_input()
    found: dict = {}
    env = environment()
    for cls in run_order(layer_analyses()):
        a = cls(layer.options, 0)
        f = a.run(layer, found)
        assert isinstance(f, Finding) and dataclasses.is_dataclass(f), cls.name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(f, dataclasses.fields(f)[0].name, None)
        found[cls.name] = f
        json.dumps(a.summary(f, layer.samples))
        values = a.metric_values(f)
        json.dumps(values)
        named = set(cls.metric_names())
        assert not named or named & set(values), (cls.name, named, set(values))  # what checks can name, it measures
        assert env.get_template(cls.template), cls.name  # the template it names exists


@pytest.mark.parametrize("name", ["pca", "tsne"])
def test_built_in_reducers_meet_the_contract(name):
    """fit: finite (N, 2) coordinates, the same for the same seed; transform places the fitted
    samples at (about) their own coordinates."""
    from reportgen.reducers import REDUCERS, call_fit, make_reducer
    from reportgen.spec import ReportOptions

    layer = _layer_input()
    r = make_reducer(REDUCERS[name].Params(), ReportOptions())
    a = call_fit(r, layer.x, seed=3, graph=layer.graph, pca=layer.pca)
    b = call_fit(r, layer.x, seed=3, graph=layer.graph, pca=layer.pca)
    assert a.coords.shape == (len(layer.x), 2) and np.isfinite(a.coords).all()
    np.testing.assert_array_equal(a.coords, b.coords)
    json.dumps(dict(a.params))
    if name == "pca":
        np.testing.assert_allclose(a.transform(layer.x), a.coords, atol=1e-4)
    else:
        moved = a.transform(layer.x[:20])
        assert moved.shape == (20, 2) and np.isfinite(moved).all()


# ----------------------------------------------------------------------------- imports


def _imports(path: Path, module: str) -> set[str]:
    """Every reportgen module ``path`` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    pkg = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("reportgen")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("reportgen"):
                continue
            for a in node.names:  # `from . import x` imports the submodule x
                sub = f"{target}.{a.name}"
                out.add(
                    sub
                    if (ROOT / (sub.replace(".", "/") + ".py")).exists() or (ROOT / sub.replace(".", "/")).is_dir()
                    else target
                )
    return out


def test_no_import_circle_in_reportgen_counting_imports_inside_functions():
    graph = {}
    for p in (ROOT / "reportgen").rglob("*.py"):
        rel = p.relative_to(ROOT).with_suffix("")
        mod = ".".join(rel.parts[:-1] if p.name == "__init__.py" else rel.parts)
        graph[mod] = _imports(p, mod)
    assert len(graph) > 30
    cycles = []

    def visit(m, stack):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in done:
            return
        for n in sorted(graph.get(m, ())):
            visit(n, stack + [m])
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        visit(m, [])
    assert not cycles, cycles[:5]
    assert "reportgen" not in {t for deps in graph.values() for t in deps}  # nothing imports the package root
    assert not graph["reportgen.images"] - {"reportgen.errors"}  # the image module is a leaf
    for stage, later in [
        ("reportgen.render", "reportgen.pipeline"),
        ("reportgen.datasets.embeddings", "reportgen.pipeline"),
        ("reportgen.spec", "reportgen.pipeline"),
    ]:
        assert later not in graph[stage]


# ----------------------------------------------------------------------------- caches know the code


CHILD = r"""
import json, sys
import reportgen
print("FROM " + str(__import__("pathlib").Path(reportgen.__file__).parent.parent))
from reportgen.pipeline import build
from reportgen.spec import load_spec
res = build(load_spec(sys.argv[1]), progress=False)
print("RESULT " + json.dumps({"forward": res.forward_calls, "fits": res.reducer_fits, "computed": res.stats.computed, "reused": res.stats.reused}))
"""


def _child_build(src: Path, spec: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}  # the copy first; ROOT for tests.netzoo
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, env=env, cwd=spec.parent, timeout=600
    )
    assert f"FROM {src}" in p.stdout, p.stdout[-500:]
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])


def test_a_changed_stage_is_recomputed_and_the_others_reused(tmp_path):
    """A copy of reportgen whose t-SNE module changes between two builds sharing one cache: the
    second build recomputes the t-SNE maps (and the figures that draw them) and nothing else."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "reportgen", src / "reportgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", src / "templates")
    d = small_spec(tmp_path, reducers=["pca", {"tsne": {"perplexity": 10, "n_iter": 100}}])
    d["dataset"]["limit"] = 100
    spec = write(tmp_path, d)
    first = _child_build(src, spec)
    assert first["forward"] > 0 and first["fits"] == 2 and first["computed"]["maps"] == 2 and not first["reused"]
    same = _child_build(src, spec)
    assert same["forward"] == 0 and same["fits"] == 0 and not same["computed"] and same["reused"]["maps"] == 2
    tsne = src / "reportgen" / "reducers" / "tsne.py"
    code = tsne.read_text()
    assert "momentum=0.8, learning_rate=lr" in code
    tsne.write_text(
        code.replace("momentum=0.8, learning_rate=lr", "momentum=0.75, learning_rate=lr")
    )  # a changed schedule
    changed = _child_build(src, spec)
    assert changed["forward"] == 0 and changed["fits"] == 2  # both layers' t-SNE maps, nothing else refitted
    assert (
        changed["computed"]["maps"] == 2 and "graphs" not in changed["computed"] and "probe" not in changed["computed"]
    )
    assert changed["reused"]["graphs"] == 2 and changed["reused"]["probe"] == 2
    # the t-SNE figures (scatter, grid and mosaic PNGs of each layer, and the slices drawn on the
    # audit layer's t-SNE map) are redrawn; the others are reused
    assert changed["computed"]["figures"] == 7 and changed["reused"]["figures"] == same["reused"]["figures"] - 7
    extract = src / "reportgen" / "extract.py"
    extract.write_text(extract.read_text() + "\n# a changed pooling step\n")
    assert _child_build(src, spec)["forward"] > 0  # embeddings are keyed by the extraction code too


# ----------------------------------------------------------------------------- the caller's process


def _hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_python_api_leaves_the_callers_process_as_it_found_it(tmp_path):
    import logging
    import warnings

    import sklearn  # noqa: F401 - the libraries' own import-time settings (scikit-learn sets KMP_* variables,
    import timm  # noqa: F401   timm's torch imports set TORCHINDUCTOR_CACHE_DIR) are theirs: loaded first,
    import torch  # they are part of the process reportgen is handed
    import umap  # noqa: F401
    from PIL import Image, ImageFile

    from reportgen.pipeline import build

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
            "models": [{**EFFNET, "input_size": 32, "layers": ["global_pool"]}],
        }
    )
    build(spec, progress=False)
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


def test_the_cli_does_its_process_housekeeping(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    code = "import os, sys; from reportgen.cli import main; main(['--version']); print(os.environ.get('NUMBA_CACHE_DIR', 'unset'))"
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
print("RESULT " + json.dumps({"torch": "torch" in sys.modules, "timm": "timm" in sys.modules, "forward": res.forward_calls, "fits": res.reducer_fits}))
"""


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
