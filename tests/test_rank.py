"""Effective rank (RankMe): the number against an independent SVD, in the depth curves, and a
dimensional collapse planted in precomputed vectors - found, with a check that fails on it, and not
raised for a healthy layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reportgen.analyses.pca import effective_rank
from tests.conftest import run, write


def test_effective_rank_against_the_singular_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40)) @ np.diag(np.linspace(3, 0.1, 40)) + 5
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    expected = float(np.exp(-(p * np.log(p)).sum()))
    ev = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    assert effective_rank(ev) == pytest.approx(expected, rel=1e-9)
    assert effective_rank(np.r_[1.0, np.zeros(9)]) == pytest.approx(1.0)
    assert effective_rank(np.ones(10)) == pytest.approx(10.0)
    assert effective_rank(np.zeros(5)) == 0.0


def _vectors(tmp_path, x, labels):
    np.save(tmp_path / "v.npy", x.astype(np.float32))
    (tmp_path / "m.tsv").write_text("label\n" + "".join(f"{l}\n" for l in labels))
    return {
        "dataset": {"kind": "embeddings", "vectors": "v.npy", "metadata": "m.tsv"},
        "reducers": ["pca"],
        "checks": [{"metric": "effective_rank", "min": 10}],
        "output": {"dir": "out"},
    }


@pytest.mark.parametrize("collapsed", [True, False])
def test_dimensional_collapse_is_a_finding_and_a_check(tmp_path, collapsed):
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 100)
    if collapsed:  # 256 features that vary along 3 directions only
        x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 256)) + 1e-3 * rng.normal(size=(300, 256))
    else:
        x = rng.normal(size=(300, 256))
    x[:, :3] += labels[:, None]
    code, _, err = run("build", str(write(tmp_path, _vectors(tmp_path, x, labels))), "-q")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    rank = s["models"][0]["layers"][0]["metrics"]["effective_rank"]
    found = [f for f in s["findings"] if f["id"].endswith("/collapse")]
    if collapsed:
        assert code == 3 and rank < 5 and found and "Dimensional collapse" in found[0]["text"]
        html = (tmp_path / "out" / "report.html").read_text()
        assert f'id="{found[0]["evidence"][1:]}"' in html
    else:
        assert code == 0, err
        assert rank > 100 and not found
