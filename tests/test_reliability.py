"""Kill builds mid-extraction and mid-render; concurrent builds; fuzzing of specs and image bytes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reportgen.errors import SpecError
from reportgen.images import BadImage, read_image_file
from reportgen.spec import loads_spec, validate_data
from tests.conftest import run, small_spec, write

ROOT = Path(__file__).parents[1]


def _interruptible() -> None:
    """Ctrl-C as a user's terminal delivers it: a suite started in the background of a
    non-interactive shell (``cmd &``) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so the build would finish instead of being interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(spec: Path, tmp: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "REPORTGEN_TEST_MARKER": str(tmp / "marker"), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "reportgen", "build", str(spec), "-v", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


def _wait_for(pred, timeout=120.0):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.05)


@pytest.mark.parametrize(
    "sig",
    # SIGKILL: ~14 s, in the slow suite (the fast one keeps Ctrl-C, whose clean-up is our code)
    [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGKILL"],
)
@pytest.mark.parametrize(
    "when",
    ["extraction", pytest.param("render", marks=pytest.mark.slow)],  # render: ~17 s each, in the slow suite
)
def test_killed_build_leaves_previous_report_intact(tmp_path, sig, when):
    good = write(tmp_path, small_spec(tmp_path), "good.yaml")
    assert run("build", str(good), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    d = small_spec(tmp_path, title="second")
    if when == "extraction":
        d["models"][0]["factory"] = "tests.netzoo:Slow"
        d["dataset"]["limit"] = 400
    else:
        d["dataset"]["limit"] = 1200
        d["reducers"] = ["pca"]
        d["report"] = {"mosaic_cap": 1200, "grid_cap": 1000, "audit": False}  # no calibration: render sooner
    proc = _start(write(tmp_path, d, "second.yaml"), tmp_path, "--no-cache")
    lines = []
    try:
        if when == "extraction":
            _wait_for(lambda: (tmp_path / "marker").exists())
        else:  # the render stage starts right after the last analysis stage is logged
            for line in proc.stderr:
                lines.append(line)
                if (
                    "stage analyse " in line
                    and line.count("analyse") == 1
                    and len([l for l in lines if "stage analyse " in l]) == 2
                ):
                    break
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, (proc.returncode, proc.stderr.read() if proc.stderr else "")
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before  # the previous report is untouched, byte for byte
    emb = tmp_path / "cache" / "embeddings"
    complete = [p for p in emb.iterdir() if not p.name.startswith(".")]
    for entry in complete:  # whatever is in the cache is whole
        assert (entry / "manifest.json").exists()
    # the next build succeeds and cleans up what a killed process left behind
    code, _, err = run("build", str(write(tmp_path, small_spec(tmp_path, title="third"), "third.yaml")), "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["title"] == "third"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_two_concurrent_builds_into_one_output_and_cache(tmp_path):
    spec = write(tmp_path, small_spec(tmp_path, title="concurrent"))
    procs = [_start(spec, tmp_path, "-q") for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["title"] == "concurrent"
    entries = [p for p in (tmp_path / "cache" / "embeddings").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    assert run("build", str(spec), "-q")[0] == 0  # the entry they raced for is valid


def test_sanitised_file_names_for_hostile_layer_and_class_names(tmp_path):
    from reportgen.results import slug

    for name in ("../../x", "/etc/passwd", "a/b\\c", "..", "", "é" * 200, "con"):
        s = slug(name)
        assert "/" not in s and "\\" not in s and not s.startswith(".") and 0 < len(s) <= 80
    assert slug("blocks.2") == "blocks.2" and slug("../../x") != slug("x")


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    spec = write(tmp_path, small_spec(tmp_path))
    assert run("build", str(spec), "-q")[0] == 0
    entry = next(p for p in (tmp_path / "cache" / "embeddings").iterdir() if not p.name.startswith("."))
    layer = next(entry.glob("layer-*.npy"))
    raw = bytearray(layer.read_bytes())
    raw[-8:] = b"\x7f" * 8
    layer.write_bytes(bytes(raw))
    from reportgen.pipeline import build
    from reportgen.spec import load_spec

    res = build(load_spec(spec), progress=False)
    assert res.forward_calls > 0 and res.models[0].origin == "computed"  # detected, recomputed
    res2 = build(load_spec(spec), progress=False)
    assert res2.forward_calls == 0  # and the new entry is good


# ------------------------------------------------------------------------------- fuzzing

VALID = yaml.safe_load("""
title: t
dataset: {kind: digits, limit: 10}
models: [{name: m, timm: resnet18, layers: [layer1]}]
reducers: [pca, {tsne: {perplexity: 5}}]
""")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "title",
        "seed",
        "dataset",
        "models",
        "reducers",
        "report",
        "output",
        "cache_dir",
        "kind",
        "limit",
        "layers",
        "name",
        "timm",
        "perplexity",
        "x",
    ]
)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.data())
def test_fuzz_spec_validation_raises_only_spec_error(data):
    spec = json.loads(json.dumps(VALID))
    for _ in range(data.draw(st.integers(0, 4))):
        # mutate: replace a value somewhere in the tree
        node = spec
        path = data.draw(st.lists(keys, min_size=1, max_size=3))
        for k in path[:-1]:
            if isinstance(node, dict):
                node = (
                    node.setdefault(k, {})
                    if not isinstance(node.get(k), (list, str, int, float, type(None), bool))
                    else node
                )
            elif isinstance(node, list) and node:
                node = node[0]
        if isinstance(node, dict):
            node[path[-1]] = data.draw(values)
        elif isinstance(node, list):
            node.append(data.draw(values))
    try:
        validate_data(spec)
    except SpecError as exc:  # the only error a spec can cause: one line, with a YAML path
        assert exc.message.count("\n") == 0 and exc.message.startswith("spec: ")


@pytest.mark.parametrize("key", ["\n", "", " x", "a.b", "[0]", "\x00", "tab\tkey"])
def test_an_unknown_key_that_would_not_read_as_one_is_quoted_on_one_line(key):
    """Found by the fuzz test above: an unknown key with a line break split the one-line error."""
    spec = {**json.loads(json.dumps(VALID)), "report": {key: 1}}
    with pytest.raises(SpecError) as err:
        validate_data(spec)
    assert err.value.message == f"spec: report[{key!r}]: unknown key; remove it"


def test_a_yaml_tag_the_safe_loader_cannot_construct_is_one_line():
    """Found by the fuzz test below: '=' (YAML's value tag) failed after composing, with PyYAML's
    three-line excerpt in the message."""
    for text, where in (("=", "line 1, column 1"), ("a: !!python/object:os.system x", "line 1, column 4")):
        with pytest.raises(SpecError) as err:
            loads_spec(text)
        assert (
            err.value.message.count("\n") == 0
            and f"malformed YAML ({where}): could not determine a constructor" in err.value.message
        )


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 200)), deadline=None)
@given(st.text(max_size=300))
def test_fuzz_yaml_text(text):
    try:
        loads_spec(text)
    except SpecError as exc:
        assert exc.message.count("\n") == 0 and exc.message.startswith("spec: ")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=2000),
    st.sampled_from([".png", ".jpg", ".webp", ".bmp", ".gif", ".tif"]),
    st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
    ),
)
def test_fuzz_image_bytes(tmp_path_factory, payload, ext, magic):
    p = tmp_path_factory.mktemp("fuzz") / f"f{ext}"
    p.write_bytes(magic + payload)
    try:
        img = read_image_file(p)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    except BadImage:
        pass
