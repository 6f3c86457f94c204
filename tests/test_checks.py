"""CI gates: real models on real data, exit code 3, JUnit XML, baselines."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from reportgen.checks import evaluate, junit_xml
from tests.conftest import EFFNET, run, write


def _spec(tmp, name, model, checks):
    return {
        "title": name,
        "dataset": {"kind": "digits", "limit": 500},
        "models": [{**model, "layers": ["blocks.4"]}],
        "reducers": ["pca"],
        "report": {"gallery_components": 2, "audit": False},  # checks, not the audit (test_findings)
        "checks": checks,
        "output": {"dir": str(tmp / name)},
        "cache_dir": str(tmp / "cache"),
    }


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checks")
    # measured on 500 digits at blocks.4: ImageNet weights ~0.91, random init ~0.84
    checks = [
        {"metric": "knn_accuracy", "model": "effnet", "layer": "blocks.4", "min": 0.88, "name": "kNN floor"},
        {"metric": "components_for_90", "max": 2000},
    ]
    pre = run("build", str(write(tmp, _spec(tmp, "pretrained", EFFNET, checks), "pre.yaml")), "-q")
    random_init = {k: v for k, v in EFFNET.items() if k != "weights"}
    rnd = run("build", str(write(tmp, _spec(tmp, "random", random_init, checks), "rnd.yaml")), "-q")
    return tmp, pre, rnd


def test_pretrained_passes_random_init_fails_with_exit_3(two_builds):
    tmp, pre, rnd = two_builds
    assert pre[0] == 0, pre[2]
    assert rnd[0] == 3, rnd[2]
    assert "check failed: kNN floor: effnet/blocks.4: knn_accuracy = " in rnd[2]
    s_pre = json.loads((tmp / "pretrained" / "summary.json").read_text())
    s_rnd = json.loads((tmp / "random" / "summary.json").read_text())
    acc_pre = s_pre["models"][0]["layers"][0]["metrics"]["knn_accuracy"]
    acc_rnd = s_rnd["models"][0]["layers"][0]["metrics"]["knn_accuracy"]
    assert acc_pre > 0.88 > acc_rnd
    assert [c["passed"] for c in s_rnd["checks"]] == [False, True]
    html = (tmp / "random" / "report.html").read_text()
    assert "1 of 2 failed" in html and "FAIL" in html  # the report is written despite the failure
    assert html.index('id="checks"') < html.index('id="summary"') < html.index('id="data"')  # the table sits at the top


def test_checks_xml_is_junit_with_one_case_per_check(two_builds):
    tmp, _, _ = two_builds
    root = ET.parse(tmp / "random" / "checks.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 2 and suite.get("tests") == "2" and suite.get("failures") == "1"
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None
    assert cases[0].get("classname") == "reportgen.effnet.blocks.4"


def test_check_command_with_baseline_drop(two_builds, tmp_path):
    tmp, _, _ = two_builds
    spec = _spec(tmp, "x", EFFNET, [{"metric": "knn_accuracy", "max_drop": 0.02}])
    code, out, err = run(
        "check",
        str(tmp / "random" / "summary.json"),
        "--baseline",
        str(tmp / "pretrained" / "summary.json"),
        "--spec",
        str(write(tmp_path, spec)),
        "--junit",
        str(tmp_path / "j.xml"),
    )
    s_pre = json.loads((tmp / "pretrained" / "summary.json").read_text())["models"][0]["layers"][0]["metrics"][
        "knn_accuracy"
    ]
    s_rnd = json.loads((tmp / "random" / "summary.json").read_text())["models"][0]["layers"][0]["metrics"][
        "knn_accuracy"
    ]
    assert code == 3
    assert f"drop {s_pre - s_rnd:.4g}" in out
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("failures") == "1"
    # the same summary against itself: no drop
    code, out, _ = run(
        "check",
        str(tmp / "pretrained" / "summary.json"),
        "--baseline",
        str(tmp / "pretrained" / "summary.json"),
        "--spec",
        str(write(tmp_path, spec)),
    )
    assert code == 0 and "drop 0" in out
    # without --spec, the checks recorded in the summary are used
    assert run("check", str(tmp / "random" / "summary.json"))[0] == 3
    assert run("check", str(tmp / "pretrained" / "summary.json"))[0] == 0


def test_unmatched_layer_fails_loudly():
    summary = {
        "generator": "reportgen",
        "models": [{"name": "m", "layers": [{"layer": "a", "metrics": {"knn_accuracy": 0.9}}]}],
    }
    r = evaluate(summary, [{"metric": "knn_accuracy", "layer": "b", "min": 0.5}])
    assert not r[0].passed and "no layer matches" in r[0].message
    assert "<failure" in junit_xml(r)


def test_metrics_match_independent_computation(two_builds):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from reportgen.store import EmbeddingStore

    tmp, _, _ = two_builds
    s = json.loads((tmp / "pretrained" / "summary.json").read_text())
    m = s["models"][0]["layers"][0]["metrics"]
    entry = EmbeddingStore(tmp / "cache").load(s["models"][0]["embeddings_key"])
    x, y = np.asarray(entry.layers["blocks.4"], np.float64), entry.labels
    ref_sil = silhouette_score(x, y, metric="cosine")
    assert m["silhouette"] == pytest.approx(ref_sil, abs=1e-9)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    ref_probe = cross_val_score(probe, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert m["linear_probe_accuracy"] == pytest.approx(ref_probe, abs=1e-9) and ref_probe > 0.85
