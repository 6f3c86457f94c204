"""Caches own their keys: a cached thing is recomputed exactly when the code that makes it, or
anything it was computed from, changed - and reused otherwise.

Asserted as invariants, never as counts that floating point can move between machines (which
figures exist depends on the t-SNE map): every figure that draws the changed map is redrawn, every
other one is read back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reportgen.fingerprint import closure, code_fingerprint, file_digest
from tests.conftest import EFFNET, make_spec, small_spec, write

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import reportgen
print("FROM " + str(__import__("pathlib").Path(reportgen.__file__).parent.parent))
from reportgen.pipeline import build
from reportgen.spec import load_spec
res = build(load_spec(sys.argv[1]), progress=False)
run = json.loads((res.output_dir / "run.json").read_text())
print("RESULT " + json.dumps({"forward": res.forward_calls, "fits": res.reducer_fits, "computed": res.stats.computed,
                              "reused": res.stats.reused, "figures": run["figures"]}))
"""


def _child_build(src: Path, spec: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}  # the copy first; ROOT for tests.netzoo
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, env=env, cwd=spec.parent, timeout=600
    )
    assert f"FROM {src}" in p.stdout, p.stdout[-500:]
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])


def _edit(path: Path, old: str, new: str) -> None:
    code = path.read_text()
    assert old in code, (path, old)
    path.write_text(code.replace(old, new, 1))


@pytest.mark.slow
def test_a_changed_stage_is_recomputed_and_the_others_reused(tmp_path):
    """A copy of reportgen whose code changes between builds sharing one cache: each change
    recomputes what follows from that code, and nothing else."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "reportgen", src / "reportgen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", src / "templates")
    d = small_spec(tmp_path, reducers=["pca", {"tsne": {"perplexity": 10, "n_iter": 100}}])
    d["dataset"]["limit"] = 100
    spec = write(tmp_path, d)
    first = _child_build(src, spec)
    assert first["forward"] > 0 and first["fits"] == 2 and first["computed"]["maps"] == 2 and not first["reused"]
    assert first["figures"]["drawn"] and not first["figures"]["reused"]
    figures = set(first["figures"]["drawn"])
    # (no rebuild of the unchanged copy here: each edit below asserts what it reuses, which needs the
    # fingerprints to be the same in a fresh process; test_report's rebuilds check a full reuse)

    # the t-SNE schedule changes: both layers' t-SNE maps are refitted, and exactly the figures that
    # draw them (its scatter, grid and mosaic, and the slices drawn on the audit layer's t-SNE map)
    _edit(
        src / "reportgen" / "reducers" / "tsne.py", "momentum=0.8, learning_rate=lr", "momentum=0.75, learning_rate=lr"
    )
    changed = _child_build(src, spec)
    assert changed["forward"] == 0 and changed["fits"] == 2 and changed["computed"]["maps"] == 2
    assert "graphs" not in changed["computed"] and "probe" not in changed["computed"]
    assert changed["reused"]["graphs"] == 2 and changed["reused"]["probe"] == 2
    # whether HDBSCAN finds slices on a 100-sample t-SNE map moves with the CPU's floating point: a
    # slices figure may appear, go or be redrawn with the map, and is the only other figure drawn
    tsne = {f for f in figures if "-tsne-" in f}
    drawn = set(changed["figures"]["drawn"])
    assert tsne and tsne <= drawn and all("-tsne-" in f or f.endswith("--slices.png") for f in drawn)
    assert set(changed["figures"]["reused"]) == figures - drawn - {f for f in figures if f.endswith("--slices.png")}

    # a base module every reducer imports: every map is refitted (PCA is never cached), the
    # graphs and the probe are not
    _edit(src / "reportgen" / "reducers" / "base.py", '"""The reducer registry', '"""The reducer registry (edited)')
    base = _child_build(src, spec)
    assert base["fits"] == 2 and base["reused"]["graphs"] == 2 and base["reused"]["probe"] == 2

    # the analyses' base module: every analysis's cached values are recomputed; the maps are not
    _edit(src / "reportgen" / "analyses" / "base.py", '"""The analysis registry', '"""The analysis registry (edited)')
    analyses = _child_build(src, spec)
    assert analyses["fits"] == 0 and analyses["computed"]["probe"] == 2 and analyses["reused"]["maps"] == 2

    # the extraction: embeddings are keyed by the code that makes them
    _edit(src / "reportgen" / "embed" / "extractor.py", '"""Extraction:', '"""Extraction (edited):')
    assert _child_build(src, spec)["forward"] > 0


def test_a_map_fitted_on_the_layers_graph_carries_the_graphs_key(tmp_path):
    """UMAP fits on the layer's neighbour graph: building that graph another way
    (report.neighbour_index) refits the UMAP map; t-SNE, which does not read the graph, is reused."""
    from reportgen.pipeline import build

    d = {
        **small_spec(tmp_path),
        "dataset": {"kind": "digits", "limit": 150},
        "models": [{**EFFNET, "input_size": 32, "layers": ["global_pool"]}],
        "reducers": ["pca", {"umap": {"n_neighbors": 8}}, {"tsne": {"perplexity": 10, "n_iter": 100}}],
        "report": {"neighbour_index": "exact", "audit": False, "slices": False},
    }
    first = build(make_spec(d), progress=False)
    assert first.reducer_fits == 2
    d["report"]["neighbour_index"] = "approximate"
    other = build(make_spec(d), progress=False)
    assert other.forward_calls == 0 and other.stats.computed["graphs"] == 1
    assert other.reducer_fits == 1 and other.stats.reused["maps"] == 1  # UMAP refitted, t-SNE read back
    assert "approximate" in other.models[0].layers[0].maps["umap"].params["neighbours"]
    again = build(make_spec(d), progress=False)
    assert again.reducer_fits == 0 and again.stats.reused["graphs"] == 1
    assert again.html is not None and not again.html.figures_drawn and again.html.figures_reused  # nothing redrawn


def test_a_code_fingerprint_reads_the_code_not_its_comments(tmp_path):
    """A comment, a blank line or a reformatting changes no result and recomputes nothing; a changed
    literal, name or docstring does."""
    base = 'X = 0.04  # the threshold\n\n\ndef f(a):\n    """Doc."""\n    return a * X\n'
    variants = {
        "comment": base.replace("# the threshold", "# measured on 10,000 images"),
        "blank": base.replace("\n\n\n", "\n\n\n\n"),
        "format": base.replace("a * X", "(a  *  X)"),
        "literal": base.replace("0.04", "0.045"),
        "docstring": base.replace("Doc.", "Docs."),
        "name": base.replace("a * X", "a + X"),
    }
    digests = {}
    for name, text in {"base": base, **variants}.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        digests[name] = file_digest(path)
    assert digests["comment"] == digests["blank"] == digests["format"] == digests["base"]
    assert len({digests[k] for k in ("base", "literal", "docstring", "name")}) == 4
    broken = tmp_path / "broken.py"  # not Python: its bytes count
    broken.write_text("def (:\n")
    first = file_digest(broken)
    broken.write_text("def (:\n# more\n")
    assert file_digest(broken) != first


def test_code_fingerprints_follow_reportgens_own_imports():
    """A module's fingerprint covers what it imports, transitively (imports inside functions too),
    and nothing it does not: t-SNE's covers the reducers' base and PCA, not UMAP; an analysis's
    covers its kernels, not the figures; annotations-only imports are not followed."""
    tsne = closure("reportgen.reducers.tsne")
    assert {"reportgen.reducers.base", "reportgen.compute.pca", "reportgen.compute.brute_force"} <= set(tsne)
    assert "reportgen.registry" in tsne
    assert (
        "reportgen.reducers.umap" not in tsne and "reportgen.compute.neighbours" not in tsne
    )  # the latter: TYPE_CHECKING only
    metrics = closure("reportgen.analyses.metrics")
    assert {"reportgen.analyses.base", "reportgen.compute.kernels", "reportgen.compute.neighbours"} <= set(metrics)
    assert not {
        m for m in metrics if m.startswith(("reportgen.figures", "reportgen.sections", "reportgen.reducers.tsne"))
    }
    assert "reportgen.figures.plots" in closure("reportgen.sections.pca")
    assert code_fingerprint("reportgen.reducers.tsne") != code_fingerprint("reportgen.reducers.umap")
    assert code_fingerprint("reportgen.reducers.tsne") == code_fingerprint("reportgen.reducers.tsne")
    # the figures' key (every figure's) follows what draws them, not the spec and the reducers it names:
    # a change to t-SNE must not redraw the PCA figures
    view = closure("reportgen.sections.view")
    assert "reportgen.figures.plots" in view
    assert not {
        m for m in view if m.startswith(("reportgen.reducers", "reportgen.specification", "reportgen.analyses"))
    }
