"""The command line: conventions, exit codes and every bad input of the foundation issue."""

import json

from tests.conftest import corrupt_folder, run, small_spec, write


def test_version_help_and_no_command():
    assert run("--version")[:2] == (0, f"reportgen {__import__('reportgen').__version__}\n")
    for sub in ("build", "validate", "schema", "layers", "demo", "cache"):
        code, out, _ = run(sub, "--help")
        assert code == 0 and "usage: reportgen" in out and "exit codes" in out
    assert run()[0] == 2


def test_usage_error_is_one_line_exit_2():
    code, out, err = run("build")
    assert code == 2 and err.count("\n") == 1 and "required: spec" in err


def test_build_small_spec_end_to_end(tmp_path):
    code, out, err = run("build", str(write(tmp_path, small_spec(tmp_path))), "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "summary.json").exists()
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [l["layer"] for l in s["models"][0]["layers"]] == ["conv", "pool"]


def test_validate_lists_all_errors(tmp_path):
    d = small_spec(tmp_path, seed=-1)
    d["dataset"]["limit"] = 0
    code, out, err = run("validate", str(write(tmp_path, d)))
    assert code == 2 and "seed: must be >= 0" in err and "dataset.limit: must be > 0" in err and "Traceback" not in err
    code, out, err = run("validate", str(write(tmp_path, small_spec(tmp_path))))
    assert code == 0 and "valid" in out


def test_schema_is_json():
    code, out, _ = run("schema")
    assert code == 0 and json.loads(out)["title"] == "ReportSpec"


def test_layers_command_lists_modules(tmp_path):
    code, out, err = run("layers", "tf_efficientnet_lite0", "--input-size", "96")
    assert code == 0, err
    assert any(l.split()[:4] == ["269", "global_pool", "SelectAdaptivePool2d", "(1,"] for l in out.splitlines())
    code, out, err = run("layers", str(write(tmp_path, small_spec(tmp_path))))
    assert code == 0 and "conv" in out and "(1, 8, 16, 16)" in out


def test_corrupt_image_skipped_counted_and_listed(tmp_path):
    root = corrupt_folder(tmp_path)
    d = small_spec(tmp_path, dataset={"kind": "image_folder", "path": str(root)})
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["dataset"]["samples_used"] == 8 and [x["id"] for x in s["dataset"]["skipped"]] == ["cat/broken.jpg"]
    assert "cat/broken.jpg" in (tmp_path / "out" / "report.html").read_text()


def test_traceback_flag_shows_traceback(tmp_path):
    d = small_spec(tmp_path)
    d["models"][0]["factory"] = "tests.netzoo:Broken"
    code, out, err = run("build", str(write(tmp_path, d)), "-q", "--traceback")
    assert code == 1 and "Traceback" in err


def test_rebuild_replaces_previous_report_and_interrupt_keeps_it(tmp_path):
    p = write(tmp_path, small_spec(tmp_path))
    assert run("build", str(p), "-q")[0] == 0
    before = (tmp_path / "out" / "summary.json").read_bytes()
    d = small_spec(tmp_path)
    d["models"][0]["factory"] = "tests.netzoo:Interrupting"
    assert run("build", str(write(tmp_path, d, "interrupting.yaml")), "-q")[0] == 130
    assert (tmp_path / "out" / "summary.json").read_bytes() == before
    assert run("build", str(p), "-q", "--set", "title=again")[0] == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["title"] == "again"


def test_cache_clear(tmp_path):
    p = write(tmp_path, small_spec(tmp_path))
    assert run("build", str(p), "-q")[0] == 0
    code, out, _ = run("cache", "clear", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "removed 1 embedding entry" in out
    assert not any((tmp_path / "cache").iterdir())  # maps, graphs, probes and figures too
