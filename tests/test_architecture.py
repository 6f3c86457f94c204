"""The architecture's promises: plug-ins from a user's own file, one-way imports, caches that know
the code, a Python API that leaves the caller's process as it found it, paths as str."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from reportgen.analyses import Column, LayerAnalysis, LayerInput, register_analysis, unregister_analysis
from reportgen.reducers import FittedMap, Reducer, ReducerParams, register_reducer, unregister_reducer
from reportgen.results import Finding, Samples
from reportgen.sections import Section, View, register_section, unregister_section
from tests.conftest import run, small_spec, write

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
    schema = json.dumps(__import__("reportgen.catalog", fromlist=["json_schema"]).json_schema())
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
    """How long each class's embedding vectors are: an analysis declared in this test file only."""

    name = "class_norms"
    title = "Embedding norms per class"
    metrics = {"mean_norm": "Mean L2 norm of the embeddings."}
    overview = (Column("mean_norm", "mean norm"),)

    def run(self, layer: LayerInput, found: Mapping[str, Finding]) -> NormFinding:
        n = np.linalg.norm(np.asarray(layer.x, np.float64), axis=1)
        return NormFinding(np.asarray([n[layer.labels == c].mean() for c in range(layer.n_classes)]))

    def metric_values(self, f: NormFinding) -> dict:
        return {"mean_norm": float(f.norms.mean())}

    def summary(self, f: NormFinding, samples: Samples) -> dict:
        return {"class_norms": {c: float(v) for c, v in zip(samples.class_names, f.norms)}}


class ClassNormsSection(Section):
    """Its section, in the same file: a table, from the user's template folder."""

    name = "class_norms"
    template = "sections/class_norms.html"  # in the user's template folder (report.templates)

    def context(self, f: NormFinding, view: View) -> dict:
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
    register_section(ClassNormsSection)
    try:
        d = small_spec(tmp_path, checks=[{"metric": "mean_norm", "layer": "pool", "min": 0.0}])
        d["report"] = {"templates": "my-templates"}  # relative to the spec's folder
        code, out, err = run("build", str(write(tmp_path, d)), "-q")
    finally:
        unregister_analysis("class_norms")
        unregister_section("class_norms")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][1]
    assert set(layer["class_norms"]) == set(s["dataset"]["classes"]) and layer["metrics"]["mean_norm"] > 0
    assert s["checks"][0]["passed"] and s["checks"][0]["metric"] == "mean_norm"
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="l-small--pool-class_norms"' in html and "Embedding norms" in html
    assert '<th class="n">mean norm</th>' in html  # its overview column, declared by the analysis
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
    from reportgen.compute.kernels import STAT_NAMES, image_statistics
    from reportgen.compute.neighbours import exact_graph
    from reportgen.compute.pca import fit_pca
    from reportgen.results import MapResult
    from reportgen.spec import ReportOptions

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = (rng.normal(size=(n, d)) + labels[:, None] * 2.0).astype(np.float32)
    thumbs = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    thumbs[-1] = thumbs[0]  # one exact duplicate
    from reportgen.compute.twins import Calibration, TwinData, signatures
    from reportgen.images import image_hash

    hashes = np.frombuffer(b"".join(image_hash(t) for t in thumbs), np.uint8).reshape(n, 16)
    samples = Samples(
        tuple(f"s{i}" for i in range(n)), labels, ("a", "b", "c"), thumbs, image_statistics(thumbs), hashes=hashes
    )
    pca = fit_pca(x, 10)
    opts = ReportOptions(axes=[("a", "c")], gallery_components=3, probe_cap=100)
    coords = pca.scores[:, :2].astype(np.float32)
    # a nonlinear map stand-in (the slices cluster the layer's t-SNE map)
    maps = {
        "pca": MapResult("pca", "PCA", coords, {}, (), ""),
        "tsne": MapResult("tsne", "t-SNE", coords * 3, {}, (), ""),
    }
    assert len(STAT_NAMES) == samples.image_stats.shape[1]
    from reportgen.compute.neighbours import GraphQuality

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
    """Each analysis: a frozen finding, JSON-ready summary and metrics, its metrics named; its
    section renders the finding with its own template, on a real View, and every finding is shown."""
    import dataclasses

    from reportgen.analyses import layer_analyses, run_order
    from reportgen.render import LADDER, render_html
    from reportgen.sections import SECTIONS

    layer = _layer_input()
    found: dict = {}
    metrics: dict = {}
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
        metrics.update(values)
        named = set(cls.metric_names())
        assert not named or named & set(values), (cls.name, named, set(values))  # what checks can name, it measures
        assert cls.name in SECTIONS, f"analysis {cls.name} has no section to show it"
    html = render_html(_report_of(layer, found, metrics), LADDER[0]).html
    shown = [name for name in found if f'id="l-m--l-{name}"' in html]
    # every finding with something to show has its section (the axes finding has one axis here)
    assert set(shown) == set(found), set(found) - set(shown)


def _report_of(layer, findings: dict, metrics: dict):
    """A ReportData around one analysed layer (what the pipeline hands the render)."""
    from reportgen.images import Preprocess
    from reportgen.report import ReportData
    from reportgen.results import DatasetInfo, LayerResult, ModelInfo, ModelResult, RunStats
    from reportgen.spec import loads_spec

    names = layer.samples.class_names
    order = {
        name: findings[name]
        for name in __import__("reportgen.analyses", fromlist=["ANALYSES"]).ANALYSES
        if name in findings
    }
    result = LayerResult("m", "l", "mean", layer.x.shape[1], len(layer.x), 0, (), layer.maps, order, metrics)
    info = ModelInfo(
        "m", "tiny", "random init", "ab" * 32, Preprocess(8, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0), "cpu"
    )
    spec = loads_spec(
        "dataset: {kind: digits}\nmodels: [{name: m, timm: resnet18, layers: [l]}]\nreport: {axes: [[a, c]]}\n"
    )
    return ReportData(
        spec=spec,
        dataset=DatasetInfo(
            "toy", "digits", "f" * 64, names, "all", {c: 40 for c in names}, {c: 40 for c in names}, True
        ),
        samples=layer.samples,
        models=(ModelResult(info, "k" * 32, "computed", 1, (result,)),),
        build_findings={},
        bad=(),
        notes=(),
        checks=(),
        stats=RunStats({}, {}, 1, 0, {}, {}),
        versions={},
    )


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


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for p in (ROOT / "reportgen").rglob("*.py"):
        rel = p.relative_to(ROOT).with_suffix("")
        mod = ".".join(rel.parts[:-1] if p.name == "__init__.py" else rel.parts)
        graph[mod] = _imports(p, mod)
    return graph


def test_no_import_circle_in_reportgen_counting_imports_inside_functions():
    graph = _import_graph()
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
    later_than = {
        "reportgen.render": "reportgen.pipeline",
        "reportgen.datasets.embeddings": "reportgen.pipeline",
        "reportgen.specification": "reportgen.pipeline",
        "reportgen.spec": "reportgen.analyses",
        "reportgen.embed": "reportgen.pipeline",
        "reportgen.compute": "reportgen.analyses",
        "reportgen.analyses": "reportgen.sections",
    }
    for stage, later in later_than.items():
        users = {m: deps for m, deps in graph.items() if m == stage or m.startswith(stage + ".")}
        assert not {m for m, deps in users.items() if any(d == later or d.startswith(later + ".") for d in deps)}, (
            stage,
            later,
        )


def test_the_spec_loads_without_the_analyses():
    """The first stage imports no later one: loading a spec imports no analysis, section, kernel
    or figure module (names that need the analyses are checked when a build starts)."""
    code = (
        "import sys, reportgen.spec; print(' '.join(sorted(m for m in sys.modules if m.startswith(('reportgen', "
        "'torch', "
        "'matplotlib')))))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    loaded = set(p.stdout.split())
    assert "reportgen.spec" in loaded, p.stderr[-2000:]
    for later in (
        "reportgen.analyses",
        "reportgen.sections",
        "reportgen.compute",
        "reportgen.figures",
        "reportgen.render",
        "torch",
        "matplotlib",
    ):
        assert not {m for m in loaded if m == later or m.startswith(later + ".")}, later


def test_analyses_compute_and_sections_present():
    """No analysis draws (figures, sections, the render, matplotlib: none imported, anywhere in
    the module); no template names a metric (the overview's columns come from the analyses)."""
    drawing = ("reportgen.figures", "reportgen.sections", "reportgen.render", "matplotlib")
    for p in sorted((ROOT / "reportgen" / "analyses").glob("*.py")):
        tree = ast.parse(p.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        mod = f"reportgen.analyses.{p.stem}"
        names |= _imports(p, mod)
        assert not {
            n for n in names if n.startswith(drawing) or n.startswith((".figures", "..figures", "..sections"))
        }, p.name
    for t in sorted((ROOT / "templates").rglob("*.html")):
        text = t.read_text()
        assert "metrics." not in text and "metrics[" not in text and "metrics.get" not in text, t.name


def test_no_module_is_over_450_lines():
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in (ROOT / "reportgen").rglob("*.py")
    }
    assert max(sizes.values()) <= 450, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists the packages by hand (templates and examples are mapped into the
    package): a new stage package missing there would install without its modules."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "reportgen").rglob("__init__.py")}
    assert packages <= listed, packages - listed
