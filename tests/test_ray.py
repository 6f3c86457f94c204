"""Extraction on Ray Data, with a real local Ray cluster started by the tests (num_cpus=2, no
outside service): the same embeddings as the local path, a worker killed mid-job, a driver
interrupted and re-run, clear errors when Ray is missing or unreachable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'reportgen[ray]'")

from reportgen.pipeline import extract_embeddings  # noqa: E402
from reportgen.store import EmbeddingStore  # noqa: E402
from tests.conftest import EFFNET, assert_same_embeddings, make_spec, run, write  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.slow  # real Ray clusters: started, joined, killed


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (reportgen uses a running one and leaves it running)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def _images(tmp: Path, n: int) -> dict:
    """n real images as a dataset spec: Fashion-MNIST where Debian's package is installed, else
    scikit-learn's digits (with mirrored copies to reach n)."""
    if FASHION.exists():
        return {
            "kind": "idx",
            "images": str(FASHION / "t10k-images-idx3-ubyte.gz"),
            "labels": str(FASHION / "t10k-labels-idx1-ubyte.gz"),
            "limit": n,
        }
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * 255 / 16).astype(np.uint8)
    imgs, labels = np.concatenate([imgs, imgs[:, :, ::-1]])[:n], np.concatenate([d.target, d.target])[:n]
    np.savez(tmp / "images.npz", images=imgs, labels=labels)
    return {"kind": "npz", "path": str(tmp / "images.npz")}


def _spec(tmp: Path, n: int, **execution) -> dict:
    """n images in shards of 125 (one batch of 64 and one of 61): shards enough for the workers to share
    and to kill or interrupt between, few images (each test's Ray overhead is per shard, not per image)."""
    return {
        "title": "ray",
        "dataset": _images(tmp, n),
        "models": [{**EFFNET, "input_size": 32, "batch_size": 64, "layers": ["blocks.2", "global_pool"]}],
        "reducers": ["pca"],
        "output": {"dir": str(tmp / "out")},
        "cache_dir": str(tmp / "cache"),
        "execution": {"engine": "ray", "shard_size": 125, **execution},
    }


def test_ray_gives_the_local_paths_embeddings_and_thumbnails(cluster, tmp_path):
    d = _spec(tmp_path, 1000)
    ds, sel, (on_ray,) = extract_embeddings(make_spec(d), progress=False)
    local = {**d, "execution": {"engine": "local"}, "cache_dir": str(tmp_path / "local-cache")}
    _, _, (here,) = extract_embeddings(make_spec(local), progress=False)
    assert on_ray.embeddings.key == here.embeddings.key  # one content key for both engines
    assert on_ray.embeddings.manifest["engine"]["name"] == "ray" and on_ray.embeddings.manifest["engine"]["shards"] == 8
    assert on_ray.embeddings.ids == here.embeddings.ids and len(set(on_ray.embeddings.ids)) == 1000
    np.testing.assert_array_equal(on_ray.embeddings.thumbnails, here.embeddings.thumbnails)
    for layer in ("blocks.2", "global_pool"):
        assert_same_embeddings(on_ray.embeddings.layers[layer], here.embeddings.layers[layer])
    (job,) = (tmp_path / "cache" / "shards").iterdir()  # assembled, then removed: only the job's record stays
    assert [p.name for p in job.iterdir()] == ["done.json"] and json.loads((job / "done.json").read_text())[
        "key"
    ] == on_ray.embeddings.key
    # a build then finds the embeddings and runs no forward pass (and needs no Ray)
    code, out, err = run("build", str(write(tmp_path, {**d, "execution": {"engine": "local"}})), "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["forward_calls"] == 0


@pytest.mark.parametrize("kind", ["image_folder", "csv", "digits"])
def test_every_dataset_kind_through_ray_reports_a_corrupt_image_as_the_local_path_does(cluster, tmp_path, kind):
    """Files read by the workers (an image folder, a CSV manifest) and a built-in dataset: the same
    samples, embeddings and skipped files as the local engine; one corrupt JPEG reported, not hidden."""
    from tests.conftest import corrupt_folder

    if kind == "digits":
        dataset = {"kind": "digits", "limit": 60}
    else:
        root = corrupt_folder(tmp_path)
        if kind == "image_folder":
            dataset = {"kind": "image_folder", "path": str(root)}
        else:
            rows = ["path,label"] + [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.*"))]
            (root / "manifest.csv").write_text("\n".join(rows) + "\n")
            dataset = {"kind": "csv", "path": str(root / "manifest.csv")}
    d = {**_spec(tmp_path, 0), "dataset": dataset}
    d["execution"] = {**d["execution"], "shard_size": 4}
    _, _, (on_ray,) = extract_embeddings(make_spec(d), progress=False)
    _, _, (here,) = extract_embeddings(
        make_spec({**d, "execution": {"engine": "local"}, "cache_dir": str(tmp_path / "local-cache")}), progress=False
    )
    a, b = on_ray.embeddings, here.embeddings
    assert a.key == b.key and a.ids == b.ids and a.bad == b.bad
    if kind != "digits":
        assert len(a.ids) == 8 and [i for i, _ in a.bad] == ["cat/broken.jpg"] and a.manifest["engine"]["shards"] == 3
    np.testing.assert_array_equal(a.thumbnails, b.thumbnails)
    for layer in a.layers:
        assert_same_embeddings(a.layers[layer], b.layers[layer])


def test_a_killed_worker_does_not_lose_or_repeat_a_sample(cluster, tmp_path):
    killed = []

    def kill_once(record):
        if not killed:
            killed.append(record["pid"])
            os.kill(int(record["pid"]), signal.SIGKILL)  # the worker's process dies mid-job

    _, sel, (r,) = extract_embeddings(make_spec(_spec(tmp_path, 750)), progress=False, on_shard=kill_once)
    assert killed
    e = r.embeddings
    assert len(e.ids) == 750 and len(set(e.ids)) == 750  # every sample exactly once
    np.testing.assert_array_equal(np.sort(e.indices), np.sort(sel.indices))
    assert e.manifest["engine"]["shards"] == 6


INTERRUPTED = r"""
import sys
from reportgen.pipeline import extract_embeddings
from reportgen.spec import load_spec
done = []
def stop_after_two(record):
    done.append(record["shard"])
    if len(done) == 2:
        raise KeyboardInterrupt  # as Ctrl-C would
try:
    extract_embeddings(load_spec(sys.argv[1]), progress=False, on_shard=stop_after_two)
except KeyboardInterrupt:
    print("INTERRUPTED")
"""


def test_an_interrupted_driver_reruns_only_the_missing_shards(tmp_path):
    d = _spec(tmp_path, 1000, num_cpus=2)
    spec_path = write(tmp_path, d)
    p = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, str(spec_path)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert "INTERRUPTED" in p.stdout, p.stderr[-2000:]
    shards = tmp_path / "cache" / "shards"
    (key_dir,) = list(shards.iterdir())
    durable = len(list(key_dir.glob("shard-*.npz")))
    assert 2 <= durable < 8
    assert not (tmp_path / "cache" / "embeddings").exists() or not [
        p for p in (tmp_path / "cache" / "embeddings").iterdir() if not p.name.startswith(".")
    ]
    code, out, err = run("extract", str(spec_path), "-q")
    assert code == 0, err
    calls = int(out.split("computed (")[1].split(" forward")[0])
    assert calls == (8 - durable) * 2  # 125-image shards, batches of 64: only the missing shards ran
    e = EmbeddingStore(tmp_path / "cache").load(json.loads((key_dir / "done.json").read_text())["key"])
    assert len(e.ids) == 1000 and len(set(e.ids)) == 1000
    assert e.manifest["engine"]["computed"] == 8 - durable and e.manifest["engine"]["reused"] == durable


def test_an_unreachable_address_is_one_clear_line(tmp_path):
    code, out, err = run("extract", str(write(tmp_path, _spec(tmp_path, 50))), "-q", "--address", "127.0.0.1:9")
    assert (
        code == 1
        and err.count("\n") == 1
        and "cannot reach a Ray cluster at '127.0.0.1:9'" in err
        and "ray start --head" in err
    )


def test_ray_not_installed_is_one_clear_line(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # what Python sees when the package is absent
        "from reportgen.cli import main\n"
        f"sys.exit(main(['extract', {str(write(tmp_path, _spec(tmp_path, 50)))!r}, '-q']))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "pip install 'reportgen[ray]'" in p.stderr, p.stderr
