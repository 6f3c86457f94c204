"""The bad-input catalogue: one table of hostile or broken inputs, each run through the CLI.

Every case must end with the documented exit code, a one-line message containing the expected
fragment (no traceback), and no partial output: no report, no cache entry, no temporary folder.
Cases with exit code 0 are inputs that must be *handled* (skipped, lowered, noted): the fragment
must then appear in summary.json, where the report states what happened.
"""

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corrupt_folder, run, small_spec, write


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h pixels (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _folder(tmp: Path, extra=None, **kw) -> dict:
    root = corrupt_folder(tmp)
    (root / "cat" / "broken.jpg").unlink()
    if extra:
        extra(root)
    return {"kind": "image_folder", "path": str(root), **kw}


def _npz(tmp: Path, images, labels, **kw) -> dict:
    np.savez(tmp / "d.npz", images=images, labels=labels)
    return {"kind": "npz", "path": str(tmp / "d.npz"), **kw}


def _idx(arr: np.ndarray, magic=8) -> bytes:
    return (
        bytes([0, 0, magic, arr.ndim])
        + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def build_case(tmp: Path, case: str):
    """Return the spec (dict or raw YAML text, or None for 'no file') for one case."""
    d = small_spec(tmp)
    m = d["models"][0]
    rng = np.random.default_rng(0)
    # ---------------------------------------------------------------- specs
    if case == "malformed_yaml":
        return "title: x\nmodels: [\n"
    if case == "alias_bomb":
        text = "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        for i in range(1, 9):
            text += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 10) + "]\n"
        return text
    if case == "spec_is_a_list":
        return "- a\n- b\n"
    if case == "spec_not_utf8":
        return b"title: \xff\xfe\n"
    if case == "missing_spec":
        return None
    if case == "unknown_key":
        d["colour"] = "red"
    elif case == "wrong_type":
        m["batch_size"] = "many"
    elif case == "negative_input_size":
        m["input_size"] = -1
    elif case == "zero_batch_size":
        m["batch_size"] = 0
    elif case == "negative_seed":
        d["seed"] = -3
    elif case == "empty_models":
        d["models"] = []
    elif case == "empty_layers":
        m["layers"] = []
    elif case == "duplicate_models":
        d["models"] = [m, dict(m)]
    elif case == "duplicate_layers":
        m["layers"] = ["conv", "conv"]
    elif case == "unknown_reducer":
        d["reducers"] = ["pca", {"isomap": {}}]
    elif case == "perplexity_too_large":
        d["dataset"]["limit"] = 20
        d["reducers"] = ["pca", {"tsne": {"perplexity": 50}}]
    elif case == "n_neighbors_too_large":
        d["dataset"]["limit"] = 12
        d["reducers"] = ["pca", {"umap": {"n_neighbors": 50}}]
    elif case == "unknown_axis_class":
        d["report"] = {"axes": [["3", "eleven"]]}
    # ---------------------------------------------------------------- data
    elif case == "missing_dataset_path":
        d["dataset"] = {"kind": "image_folder", "path": str(tmp / "nowhere")}
    elif case == "empty_dataset":
        (tmp / "empty").mkdir()
        d["dataset"] = {"kind": "image_folder", "path": str(tmp / "empty")}
    elif case == "empty_class_folder":
        d["dataset"] = _folder(tmp, lambda r: (r / "empty").mkdir())
    elif case == "one_class":
        d["dataset"] = _npz(tmp, np.zeros((5, 8, 8), np.uint8), np.zeros(5, int))
    elif case == "zero_byte_png_skipped":
        d["dataset"] = _folder(tmp, lambda r: (r / "cat" / "zero.png").write_bytes(b""))
    elif case == "zero_byte_png_fail":
        d["dataset"] = _folder(tmp, lambda r: (r / "cat" / "zero.png").write_bytes(b""), on_bad_image="fail")
    elif case == "truncated_jpeg_fail":

        def cut(r):
            from PIL import Image

            Image.open(r / "astro" / "0.png").save(r / "astro" / "t.jpg")
            (r / "astro" / "t.jpg").write_bytes((r / "astro" / "t.jpg").read_bytes()[:300])

        d["dataset"] = _folder(tmp, cut, on_bad_image="fail")
    elif case == "truncated_png_skipped":
        d["dataset"] = _folder(
            tmp, lambda r: (r / "cat" / "t.png").write_bytes((r / "cat" / "0.png").read_bytes()[:200])
        )
    elif case == "decompression_bomb":
        d["dataset"] = _folder(
            tmp, lambda r: _png_header_only(r / "cat" / "bomb.png", 40000, 40000), on_bad_image="fail"
        )
    elif case == "tiny_1x1_image":
        from PIL import Image

        d["dataset"] = _folder(tmp, lambda r: Image.new("RGB", (1, 1), (200, 10, 10)).save(r / "cat" / "dot.png"))
    elif case == "huge_10000x10000_image":
        from PIL import Image

        d["dataset"] = _folder(tmp, lambda r: Image.new("L", (10000, 10000), 90).save(r / "astro" / "huge.png"))
    elif case == "cmyk_and_16bit_images":
        from PIL import Image

        def modes(r):
            Image.open(r / "cat" / "0.png").convert("CMYK").save(r / "cat" / "cmyk.jpg")
            Image.fromarray(np.asarray(Image.open(r / "cat" / "1.png").convert("L"), np.uint16) * 257).save(
                r / "cat" / "deep.png"
            )

        d["dataset"] = _folder(tmp, modes)
    elif case == "symlink_loop":
        d["dataset"] = _folder(tmp, lambda r: os.symlink(r, r / "cat" / "loop"))
    elif case == "non_utf8_file_name":

        def weird(r):
            raw = os.fsencode(str(r / "cat")) + b"/caf\xe9.png"
            with open(raw, "wb") as f:
                f.write((r / "cat" / "0.png").read_bytes())

        d["dataset"] = _folder(tmp, weird)
    elif case == "csv_missing_column":
        (tmp / "m.csv").write_text("file,label\na.png,x\n")
        d["dataset"] = {"kind": "csv", "path": str(tmp / "m.csv")}
    elif case == "csv_path_outside":
        (tmp / "m.csv").write_text("path,label\n../../../etc/passwd,x\nb.png,y\n")
        d["dataset"] = {"kind": "csv", "path": str(tmp / "m.csv")}
    elif case == "idx_wrong_magic":
        (tmp / "i.idx").write_bytes(b"\x08\x03\x00\x00" + b"\x00" * 100)
        (tmp / "l.idx").write_bytes(_idx(np.zeros(4)))
        d["dataset"] = {"kind": "idx", "images": str(tmp / "i.idx"), "labels": str(tmp / "l.idx")}
    elif case == "idx_truncated":
        (tmp / "i.idx.gz").write_bytes(gzip.compress(_idx(np.zeros((10, 8, 8)))[:-30]))
        (tmp / "l.idx").write_bytes(_idx(np.arange(10) % 2))
        d["dataset"] = {"kind": "idx", "images": str(tmp / "i.idx.gz"), "labels": str(tmp / "l.idx")}
    elif case == "npz_mismatched_lengths":
        d["dataset"] = _npz(tmp, np.zeros((6, 8, 8)), np.zeros(4))
    elif case == "labels_out_of_range":
        d["dataset"] = _npz(tmp, np.zeros((6, 8, 8)), np.array([0, 1, 2, 5, 1, 0]), class_names=["a", "b", "c"])
    elif case == "npz_object_array":
        np.savez(tmp / "o.npz", images=np.array([np.zeros((2, 2)), "x"], dtype=object), labels=np.zeros(2))
        d["dataset"] = {"kind": "npz", "path": str(tmp / "o.npz")}
    # ---------------------------------------------------------------- models
    elif case == "checkpoint_executes_code":
        (tmp / "evil.pt").write_bytes(pickle.dumps({"w": Payload(tmp / "pwned")}))
        m["checkpoint"] = str(tmp / "evil.pt")
    elif case == "checkpoint_truncated":
        import torch

        from tests.netzoo import Small

        torch.save(Small().state_dict(), tmp / "ok.pt")
        (tmp / "cut.pt").write_bytes((tmp / "ok.pt").read_bytes()[:100])
        m["checkpoint"] = str(tmp / "cut.pt")
    elif case == "checkpoint_wrong_architecture":
        import torch

        torch.save({"fc.weight": torch.zeros(2, 2)}, tmp / "ck.pt")
        m["checkpoint"] = str(tmp / "ck.pt")
    elif case == "checkpoint_missing":
        m["checkpoint"] = str(tmp / "nope.pt")
    elif case == "forward_raises":
        m["factory"] = "tests.netzoo:Broken"
    elif case == "layer_returns_tuple":
        m["factory"] = "tests.netzoo:TupleOut"
        m["layers"] = ["lstm"]
    elif case == "layer_never_called":
        m["factory"] = "tests.netzoo:TupleOut"
        m["layers"] = ["unused"]
    elif case == "unknown_timm_model":
        d["models"] = [{"name": "m", "timm": "resnet_18", "layers": ["layer1"]}]
    elif case == "unknown_layer":
        m["layers"] = ["convv"]
    elif case == "layer_index_out_of_range":
        m["layers"] = [99]
    elif case == "layer_too_large":
        m["layers"] = [{"name": "conv", "reshape": "flatten"}]
        m["max_features"] = 100
    elif case == "factory_not_importable":
        m["factory"] = "no_such_package.models:make"
    # ---------------------------------------------------------------- numbers
    elif case == "nan_and_inf_embeddings":
        m["factory"] = "tests.netzoo:NaNs"
        m["layers"] = ["poison"]
    elif case == "all_identical_samples":
        d["dataset"] = _npz(tmp, np.full((10, 8, 8), 7, np.uint8), np.arange(10) % 2)
    elif case == "one_sample_per_class":
        d["dataset"] = _npz(tmp, rng.integers(0, 255, (5, 8, 8), dtype=np.uint8), np.arange(5))
    elif case == "two_samples_total":
        d["dataset"] = _npz(tmp, rng.integers(0, 255, (2, 8, 8), dtype=np.uint8), np.arange(2))
    # ---------------------------------------------------------------- output
    elif case == "unwritable_output":
        (tmp / "file").write_text("x")
        d["output"] = {"dir": str(tmp / "file" / "out")}
    elif case == "output_not_ours":
        (tmp / "out").mkdir()
        (tmp / "out" / "thesis.tex").write_text("precious")
    elif case == "interrupted":
        m["factory"] = "tests.netzoo:Interrupting"
    elif case == "max_samples_guard":
        return ("--max-samples", "0", d)
    else:
        raise KeyError(case)
    return d


CATALOGUE = [
    # specs
    ("malformed_yaml", 2, "malformed YAML (line 3"),
    ("alias_bomb", 2, "alias bomb"),
    ("spec_is_a_list", 2, "must be a YAML mapping"),
    ("spec_not_utf8", 2, "not UTF-8"),
    ("missing_spec", 2, "spec file not found"),
    ("unknown_key", 2, "colour: unknown key"),
    ("wrong_type", 2, "models[0].batch_size: input should be a valid integer"),
    ("negative_input_size", 2, "models[0].input_size: must be > 0, got -1"),
    ("zero_batch_size", 2, "models[0].batch_size: must be > 0, got 0"),
    ("negative_seed", 2, "seed: must be >= 0, got -3"),
    ("empty_models", 2, "models: must have at least 1 item"),
    ("empty_layers", 2, "models[0].layers: must have at least 1 item"),
    ("duplicate_models", 2, "duplicate model name 'small'"),
    ("duplicate_layers", 2, "duplicate layer 'conv'"),
    ("unknown_reducer", 2, "reducers[1]: unknown kind 'isomap'"),
    ("perplexity_too_large", 0, "perplexity lowered from 50"),
    ("n_neighbors_too_large", 0, "n_neighbors lowered from 50"),
    ("unknown_axis_class", 2, "report.axes[0]: class 'eleven' is not in the dataset"),
    ("max_samples_guard", 2, "--max-samples must be > 0"),
    # data
    ("missing_dataset_path", 1, "dataset.path: folder not found"),
    ("empty_dataset", 1, "has no class sub-folders"),
    ("empty_class_folder", 1, "has no images"),
    ("one_class", 1, "only one class"),
    ("zero_byte_png_skipped", 0, "zero.png"),
    ("zero_byte_png_fail", 1, "cannot read sample 'cat/zero.png'"),
    ("truncated_jpeg_fail", 1, "cannot read sample 'astro/t.jpg'"),
    ("truncated_png_skipped", 0, "cat/t.png"),
    ("decompression_bomb", 1, "decompression bomb"),
    ("tiny_1x1_image", 0, '"samples_used": 9'),
    ("huge_10000x10000_image", 0, '"samples_used": 9'),
    ("cmyk_and_16bit_images", 0, '"samples_used": 10'),
    ("symlink_loop", 0, '"samples_used": 8'),
    ("non_utf8_file_name", 0, "caf\ufffd.png"),
    ("csv_missing_column", 1, "column 'path' not in"),
    ("csv_path_outside", 1, "points outside"),
    ("idx_wrong_magic", 1, "bad magic number"),
    ("idx_truncated", 1, "IDX file is truncated"),
    ("npz_mismatched_lengths", 1, "6 images but 4 labels"),
    ("labels_out_of_range", 1, "label 5 is out of range for 3 class_names"),
    ("npz_object_array", 1, "cannot read without pickle"),
    # models
    ("checkpoint_executes_code", 1, "needs unsafe unpickling"),
    ("checkpoint_truncated", 1, "damaged or truncated"),
    ("checkpoint_wrong_architecture", 1, "does not fit the architecture: 2 missing (first: conv.weight"),
    ("checkpoint_missing", 1, "checkpoint: file not found"),
    ("forward_raises", 1, "forward pass failed (RuntimeError: shape mismatch in my custom head)"),
    ("layer_returns_tuple", 1, "returns a tuple, not a tensor"),
    ("layer_never_called", 1, "'unused' was not called during the forward pass"),
    ("unknown_timm_model", 1, "unknown model 'resnet_18'; did you mean"),
    ("unknown_layer", 1, "no layer named 'convv'; did you mean 'conv'"),
    ("layer_index_out_of_range", 1, "index 99 is out of range"),
    ("layer_too_large", 1, "over the 100 limit; use reshape: mean"),
    ("factory_not_importable", 1, "cannot import module 'no_such_package.models'"),
    # numbers
    ("nan_and_inf_embeddings", 0, "had NaN or Inf values"),
    ("all_identical_samples", 0, "zero variance"),
    ("one_sample_per_class", 0, '"samples_used": 5'),
    ("two_samples_total", 0, '"samples_used": 2'),
    # output
    ("unwritable_output", 1, "output.dir"),
    ("output_not_ours", 1, "is not a reportgen report"),
    ("interrupted", 130, "interrupted"),
]


#: Cases that take 10 s or more (a UMAP fit, compiled on first use): in the slow suite.
SLOW = {"n_neighbors_too_large"}


@pytest.mark.parametrize(
    "case,code,fragment",
    [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW else []) for c in CATALOGUE],
)
def test_bad_input(tmp_path, case, code, fragment):
    made = build_case(tmp_path, case)
    extra = []
    if isinstance(made, tuple):
        *extra, made = made
    if made is None:
        spec = tmp_path / "absent.yaml"
    elif isinstance(made, bytes):
        spec = tmp_path / "spec.yaml"
        spec.write_bytes(made)
    else:
        spec = write(tmp_path, made)
    got, out, err = run("build", str(spec), "-q", *extra)
    # the catalogue's closing line (conftest.py) counts these outcomes from pytest's reports, whatever the test order
    assert got == code, f"exit {got}, expected {code}: {err}"
    assert "Traceback" not in err, err
    if code == 0:
        summary = (tmp_path / "out" / "summary.json").read_text()
        assert fragment in summary.encode().decode("unicode_escape", "ignore") or fragment in summary, summary[:2000]
    else:
        assert err.count("\n") == 1 and err.startswith("reportgen: "), err
        assert fragment in err, err
        assert not (tmp_path / "out" / "report.html").exists()
        emb = tmp_path / "cache" / "embeddings"
        assert not emb.exists() or not [p for p in emb.iterdir()], "half-written cache entry"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name], "temporary output left behind"
    assert not (tmp_path / "pwned").exists(), "code in a checkpoint was executed"
    if case == "output_not_ours":
        assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


def test_catalogue_is_large_and_unique():
    names = [c[0] for c in CATALOGUE]
    assert len(names) >= 40 and len(set(names)) == len(names)
