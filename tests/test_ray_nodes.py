"""Many machines, as the README tells a user to start them: a head node (``ray start --head``) and a
second node joining it (``ray start --address``), both with token authentication as 'ray start'
sets it up, then ``reportgen extract --address`` from a third process. Both nodes are real raylets
on this machine (separate processes, their own workers); what differs across real machines - the
shared filesystem - is what the README asks for, and this test's cache folder is one."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'reportgen[ray]'")

from tests.conftest import EFFNET, assert_same_embeddings, make_spec, write

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.slow  # real Ray clusters: started, joined, killed


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a joining node, one CPU each, sharing a token; each 'ray start --block' stops its
    own processes when terminated (no 'ray stop', which would stop every Ray on the machine)."""
    tmp = Path(tempfile.mkdtemp(prefix="rgray", dir="/tmp"))  # short: Ray's socket paths live under it
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    # RAY_TMPDIR: the sessions and the 'current cluster' file in this folder, not the machine's /tmp/ray
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(tmp),
    }
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [
        subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--port",
                str(port),
                "--num-cpus",
                "1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--block",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait(
            lambda: subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True).returncode == 0,
            "the head node",
        )
        nodes.append(
            subprocess.Popen(
                [RAY, "start", "--address", address, "--num-cpus", "1", "--block"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(
            lambda: (
                subprocess.run(
                    [RAY, "status", "--address", address], env=env, capture_output=True, text=True
                ).stdout.count(" node_")
                == 2
            ),
            "the second node",
        )
        yield address, env, tmp
    finally:
        for p in reversed(nodes):
            p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(ready, what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not come up in {timeout:.0f} s")


def _spec(tmp: Path) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp / "digits.npz", images=(d.images * 255 / 16).astype(np.uint8)[:800], labels=d.target[:800])
    return {
        "title": "nodes",
        "dataset": {"kind": "npz", "path": str(tmp / "digits.npz")},
        "models": [{**EFFNET, "input_size": 32, "batch_size": 100, "layers": ["blocks.2", "global_pool"]}],
        "reducers": ["pca"],
        "output": {"dir": str(tmp / "out")},
        "cache_dir": str(tmp / "cache"),
        "execution": {"engine": "ray", "shard_size": 100, "cpus_per_worker": 1},
    }


def _cli(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reportgen", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )


def test_two_nodes_share_the_job_and_give_the_local_paths_embeddings(two_nodes, tmp_path):
    from reportgen.pipeline import extract_embeddings
    from reportgen.store import EmbeddingStore

    address, env, _ = two_nodes
    d = _spec(tmp_path)
    spec_path = write(tmp_path, d)
    p = _cli("extract", str(spec_path), "--address", address, "-q", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    (job,) = (tmp_path / "cache" / "shards").iterdir()
    e = EmbeddingStore(tmp_path / "cache").load(json.loads((job / "done.json").read_text())["key"])
    engine = e.manifest["engine"]
    assert engine["name"] == "ray" and engine["shards"] == 8 and engine["computed"] == 8
    assert engine["workers"] == 2 and engine["nodes"] == 2  # one actor per one-CPU node: both machines worked
    assert len(e.ids) == 800 and len(set(e.ids)) == 800
    local = {**d, "execution": {"engine": "local"}, "cache_dir": str(tmp_path / "local-cache")}
    _, _, (here,) = extract_embeddings(make_spec(local), progress=False)
    assert e.key == here.embeddings.key and e.ids == here.embeddings.ids
    np.testing.assert_array_equal(e.thumbnails, here.embeddings.thumbnails)
    for layer in ("blocks.2", "global_pool"):
        assert_same_embeddings(e.layers[layer], here.embeddings.layers[layer])


def test_a_machine_without_the_clusters_token_gets_one_clear_line(two_nodes, tmp_path):
    address, env, tmp = two_nodes
    wrong = tmp / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    p = _cli(
        "extract",
        str(write(tmp_path, _spec(tmp_path))),
        "--address",
        address,
        "-q",
        env={**env, "RAY_AUTH_TOKEN_PATH": str(wrong)},
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]  # Ray's own client may log one warning line before it
    assert (
        last.startswith("reportgen: error: execution.address:")
        and "refuses this machine's token" in last
        and "RAY_AUTH_MODE=token" in last
    )


def test_without_an_address_the_job_starts_its_own_cluster_not_the_running_one(two_nodes, tmp_path):
    """ray.init() alone would join the cluster 'ray start' left on this machine (it finds it through
    the 'current cluster' file, and this process has the token); the documented behaviour is a
    local cluster for the job."""
    _, env, tmp = two_nodes
    assert (tmp / "ray" / "ray_current_cluster").exists()  # what ray.init() would follow
    d = _spec(tmp_path)
    d["execution"] = {**d["execution"], "num_cpus": 1}
    p = _cli("extract", str(write(tmp_path, d)), "-q", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    manifest = json.loads(next((tmp_path / "cache" / "embeddings").glob("*/manifest.json")).read_text())
    assert manifest["engine"]["nodes"] == 1 and manifest["engine"]["workers"] == 1
