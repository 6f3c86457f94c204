"""The command line: conventions, exit codes and every bad input of the foundation issue."""
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from reportgen.cli import main


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def small_spec(tmp: Path, **over) -> dict:
    d = {
        "title": "cli",
        "dataset": {"kind": "digits", "limit": 40},
        "models": [{"name": "small", "factory": "tests.netzoo:Small", "input_size": 16, "batch_size": 16, "layers": ["conv", "pool"]}],
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


def _corrupt_folder(tmp: Path) -> Path:
    from PIL import Image
    from skimage import data

    root = tmp / "imgs"
    for c, img in (("cat", data.chelsea()), ("astro", data.astronaut())):
        (root / c).mkdir(parents=True)
        for j in range(4):
            Image.fromarray(np.roll(img[::8, ::8], 9 * j, axis=0)).save(root / c / f"{j}.png")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return root


def test_corrupt_image_skipped_counted_and_listed(tmp_path):
    root = _corrupt_folder(tmp_path)
    d = small_spec(tmp_path, dataset={"kind": "image_folder", "path": str(root)})
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["dataset"]["samples_used"] == 8 and [x["id"] for x in s["dataset"]["skipped"]] == ["cat/broken.jpg"]
    assert "cat/broken.jpg" in (tmp_path / "out" / "report.html").read_text()


# Each bad input: (name, how to make the spec, exit code, message fragment).
def _mk(tmp: Path, case: str):
    d = small_spec(tmp)
    m = d["models"][0]
    if case == "malformed_yaml":
        return "title: x\nmodels: [\n"
    if case == "unknown_key":
        d["colour"] = "red"
    elif case == "wrong_type":
        m["batch_size"] = "many"
    elif case == "missing_dataset_path":
        d["dataset"] = {"kind": "image_folder", "path": str(tmp / "nowhere")}
    elif case == "empty_class_folder":
        root = _corrupt_folder(tmp)
        (root / "empty").mkdir()
        d["dataset"] = {"kind": "image_folder", "path": str(root)}
    elif case == "empty_dataset":
        (tmp / "empty").mkdir()
        d["dataset"] = {"kind": "image_folder", "path": str(tmp / "empty")}
    elif case == "one_class":
        np.savez(tmp / "one.npz", images=np.zeros((5, 8, 8), np.uint8), labels=np.zeros(5, int))
        d["dataset"] = {"kind": "npz", "path": str(tmp / "one.npz")}
    elif case == "bad_image_fail":
        d["dataset"] = {"kind": "image_folder", "path": str(_corrupt_folder(tmp)), "on_bad_image": "fail"}
    elif case == "unknown_timm":
        d["models"] = [{"name": "m", "timm": "resnet_18", "layers": ["layer1"]}]
    elif case == "checkpoint_mismatch":
        import torch

        torch.save({"fc.weight": torch.zeros(2, 2)}, tmp / "ck.pt")
        m["checkpoint"] = str(tmp / "ck.pt")
    elif case == "unsafe_checkpoint":
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp / "pwned"),))

        (tmp / "evil.pt").write_bytes(pickle.dumps({"w": Payload()}))
        m["checkpoint"] = str(tmp / "evil.pt")
    elif case == "unknown_layer":
        m["layers"] = ["convv"]
    elif case == "layer_index_out_of_range":
        m["layers"] = [99]
    elif case == "layer_too_large":
        m["layers"] = [{"name": "conv", "reshape": "flatten"}]
        m["max_features"] = 100
    elif case == "unwritable_output":
        (tmp / "file").write_text("x")
        d["output"] = {"dir": str(tmp / "file" / "out")}
    elif case == "output_not_ours":
        (tmp / "out").mkdir()
        (tmp / "out" / "thesis.tex").write_text("precious")
    elif case == "forward_raises":
        m["factory"] = "tests.netzoo:Broken"
    elif case == "interrupted":
        m["factory"] = "tests.netzoo:Interrupting"
    elif case == "missing_spec":
        return None
    return d


CASES = [
    ("malformed_yaml", 2, "malformed YAML (line 3"),
    ("unknown_key", 2, "colour: unknown key"),
    ("wrong_type", 2, "models[0].batch_size: input should be a valid integer"),
    ("missing_spec", 2, "spec file not found"),
    ("missing_dataset_path", 1, "dataset.path: folder not found"),
    ("empty_class_folder", 1, "has no images"),
    ("empty_dataset", 1, "has no class sub-folders"),
    ("one_class", 1, "only one class"),
    ("bad_image_fail", 1, "cannot read sample 'cat/broken.jpg'"),
    ("unknown_timm", 1, "unknown model 'resnet_18'; did you mean"),
    ("checkpoint_mismatch", 1, "does not fit the architecture: 2 missing (first: conv.weight"),
    ("unsafe_checkpoint", 1, "needs unsafe unpickling"),
    ("unknown_layer", 1, "no layer named 'convv'; did you mean 'conv'"),
    ("layer_index_out_of_range", 1, "index 99 is out of range"),
    ("layer_too_large", 1, "over the 100 limit; use reshape: mean"),
    ("unwritable_output", 1, "output.dir"),
    ("output_not_ours", 1, "is not a reportgen report"),
    ("forward_raises", 1, "forward pass failed (RuntimeError: shape mismatch in my custom head)"),
    ("interrupted", 130, "interrupted"),
]


@pytest.mark.parametrize("case,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_error_nothing_written(tmp_path, case, code, fragment):
    d = _mk(tmp_path, case)
    spec = tmp_path / "absent.yaml" if d is None else write(tmp_path, d)
    got, out, err = run("build", str(spec), "-q")
    assert got == code, err
    assert fragment in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "report.html").exists()
    if (tmp_path / "cache" / "embeddings").exists():
        assert not list((tmp_path / "cache" / "embeddings").iterdir())  # no half-written entry
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert not leftovers
    assert not (tmp_path / "pwned").exists()
    if case == "output_not_ours":
        assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_traceback_flag_shows_traceback(tmp_path):
    d = _mk(tmp_path, "forward_raises")
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


def test_nan_embeddings_reported(tmp_path):
    d = small_spec(tmp_path)
    d["models"][0]["factory"] = "tests.netzoo:NaNs"
    d["models"][0]["layers"] = ["conv"]
    d["models"][0]["batch_size"] = 64
    code, out, err = run("build", str(write(tmp_path, d)), "-q", "--no-cache")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"][0]["layers"][0]["nonfinite_rows"] == 0  # conv output itself is finite


def test_cache_clear(tmp_path):
    p = write(tmp_path, small_spec(tmp_path))
    assert run("build", str(p), "-q")[0] == 0
    code, out, _ = run("cache", "clear", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "removed 1 cache entry" in out
