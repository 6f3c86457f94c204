"""Extraction streams to disk: peak memory does not grow with the number of images."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]

SCRIPT = r"""
import json, resource, sys
import numpy as np
from reportgen.pipeline import extract_embeddings
from tests.conftest import small_spec
from tests.conftest import make_spec
from pathlib import Path
tmp = Path(sys.argv[1]); n = int(sys.argv[2])
d = small_spec(tmp, dataset={"kind": "npz", "path": str(tmp / "big.npz"), "limit": n, "sample": "first"})
d["models"][0]["layers"] = [{"name": "conv", "reshape": "flatten"}]   # 2,048 floats per image
d["models"][0]["batch_size"] = 256
d["cache_dir"] = str(tmp / f"cache{n}")
ds, sel, runs = extract_embeddings(make_spec(d), progress=False)
x = runs[0].embeddings.layers["conv"]
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child started by a big pytest
# process would report the parent's peak
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"n": len(x), "dim": x.shape[1], "peak_mb": hwm / 1024}))
"""


@pytest.mark.slow
def test_peak_memory_of_extraction_is_flat_in_n(tmp_path, record_property):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "big.npz",
        images=rng.integers(0, 255, (20_000, 28, 28), dtype=np.uint8),
        labels=np.arange(20_000) % 10,
    )
    out = {}
    for n in (10_000, 20_000):
        r = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path), str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    assert out[20_000]["n"] == 20_000 and out[20_000]["dim"] == 2048
    kept_in_memory = 10_000 * 2048 * 4 / 2**20  # what 10,000 more rows would cost if they were kept: 78 MB
    growth = out[20_000]["peak_mb"] - out[10_000]["peak_mb"]
    record_property(  # shown at the end of the run (tests/conftest.py), from an xdist worker too
        "summary_line",
        f"extraction peak RSS: {out[10_000]['peak_mb']:.0f} MB at N=10,000, "
        f"{out[20_000]['peak_mb']:.0f} MB at N=20,000",
    )
    print(
        f"\nextraction peak RSS: {out[10_000]['peak_mb']:.0f} MB at N=10,000, {out[20_000]['peak_mb']:.0f} MB at "
        f"N=20,000 (growth {growth:.0f} MB; keeping rows would add {kept_in_memory:.0f} MB)"
    )
    assert growth < 40, out


def test_a_stage_hands_back_the_pages_of_the_memory_maps_it_read(tmp_path):
    """A memory-mapped layer read all over by one stage (a neighbour search) does not stay resident
    into the next: ``release_all`` (run at every stage's end) drops its pages from the process's
    resident memory, the data still readable; a map no longer used is forgotten."""
    import gc

    from reportgen import streaming

    def rss_file_mb() -> float:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssFile")) / 1024

    np.save(tmp_path / "a.npy", np.arange(40_000 * 256, dtype=np.float32).reshape(40_000, 256))  # 40 MB
    a = np.load(tmp_path / "a.npy", mmap_mode="r")
    streaming.track(a)
    before = rss_file_mb()
    a[np.random.default_rng(0).permutation(40_000)].sum()  # read all over, as a gather does
    assert rss_file_mb() - before > 30
    streaming.release_all()
    assert rss_file_mb() - before < 5
    assert np.array_equal(a[123], np.arange(123 * 256, 124 * 256, dtype=np.float32))  # still there
    key = id(a)
    assert key in streaming._MAPPED
    del a
    gc.collect()
    assert key not in streaming._MAPPED and all(
        r() is not None for r in streaming._MAPPED.values()
    )  # forgotten, no dead entries
