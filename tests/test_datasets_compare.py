"""Comparing datasets through one model (here: raw pixels, `models: none`)."""

import html
import json

import numpy as np
import pytest

from reportgen.compute import twins
from reportgen.compute.kernels import domain_auc, mmd_permutation_test
from tests.conftest import run, write


def test_mmd_and_auc_tell_shift_from_no_shift():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    same, p_same = mmd_permutation_test(a, b, permutations=100)
    shifted, p_shift = mmd_permutation_test(a, c, permutations=100)
    assert p_same > 0.05 and p_shift < 0.02 and shifted > same
    assert abs(domain_auc(a, b) - 0.5) < 0.1 and domain_auc(a, c) > 0.8


@pytest.mark.slow
def test_clean_vs_corrupted_digits_through_raw_pixels(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * 255 / 16).astype(np.uint8)
    np.savez(tmp_path / "clean.npz", images=imgs[:300], labels=d.target[:300])
    noisy = np.clip(
        imgs[300:600].astype(int) + np.random.default_rng(0).integers(-90, 90, imgs[300:600].shape), 0, 255
    ).astype(np.uint8)
    np.savez(tmp_path / "noisy.npz", images=noisy, labels=d.target[300:600])
    np.savez(tmp_path / "held.npz", images=imgs[600:900], labels=d.target[600:900])
    spec = {
        "title": "clean vs corrupted",
        "datasets": [
            {"kind": "npz", "path": "clean.npz", "name": "clean"},
            {"kind": "npz", "path": "noisy.npz", "name": "noisy"},
            {"kind": "npz", "path": "held.npz", "name": "held-out clean"},
        ],
        "models": "none",
        "reducers": ["pca", {"tsne": {"perplexity": 20, "n_iter": 250}}],
        "report": {"gallery_components": 2},
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"][0]["arch"] == "pixels"
    by = {r["dataset"]: r for r in s["dataset_shift"]}
    assert by["noisy"]["p_value"] < 0.05 and by["noisy"]["domain_auc"] > 0.9
    assert (
        by["held-out clean"]["domain_auc"] < by["noisy"]["domain_auc"]
        and by["held-out clean"]["mmd2"] < by["noisy"]["mmd2"]
    )
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="compare_datasets"' in html and "datasets--pixels--pixels-tsne.png" in html


def test_precomputed_embeddings_are_compared_and_leaks_found(tmp_path):
    """Two sets of precomputed vectors from one model (here: the digits' pixels) are compared like
    images through a model: the shift is measured and images copied into the second set are leaks."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * 255 / 16).astype(np.uint8)
    vec = d.data.astype(np.float32)
    rng = np.random.default_rng(0)
    train, test = np.arange(0, 600), np.arange(600, 800)
    copied = rng.choice(len(test), 10, replace=False)
    src = rng.choice(train, 10, replace=False)
    t_img, t_vec, t_lab = imgs[test].copy(), vec[test].copy(), d.target[test].copy()
    t_img[copied], t_vec[copied], t_lab[copied] = imgs[src], vec[src], d.target[src]
    # the compared set has a class of its own, which sorts before the digits: its labels index its own
    # class names, not the reference's, and a leak's card must say its own label (escaped)
    t_lab = t_lab.astype(object)
    t_lab[copied[0]] = "<odd & class>"
    for name, (v, im, lab) in {"a": (vec[train], imgs[train], d.target[train]), "b": (t_vec, t_img, t_lab)}.items():
        np.save(tmp_path / f"{name}_v.npy", v)
        np.save(tmp_path / f"{name}_i.npy", im)
        (tmp_path / f"{name}.tsv").write_text("".join(f"{x}\n" for x in lab))
    spec = {
        "title": "precomputed splits",
        "datasets": [
            {"kind": "embeddings", "vectors": "a_v.npy", "images": "a_i.npy", "metadata": "a.tsv", "name": "train"},
            {"kind": "embeddings", "vectors": "b_v.npy", "images": "b_i.npy", "metadata": "b.tsv", "name": "test"},
        ],
        "reducers": ["pca"],
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["dataset"] for r in s["dataset_shift"]] == ["test"]
    leak = s["leakage"][0]
    found = {int(p["id"].rsplit("-", 1)[1]) for p in leak["pairs"] if p["identical"]}
    assert set(copied.tolist()) <= found
    # 8-px digits in 32-px thumbnails: both sets' signatures at the smallest side, not the thumbnails'
    assert s["models"][0]["layers"][0]["audit"]["calibration"].startswith(f"on {twins.MIN_SIG_PX}-px grey signatures")
    html_text = (tmp_path / "out" / "report.html").read_text()
    for p in leak["pairs"]:
        r = int(p["id"].rsplit("-", 1)[1])
        assert f'title="{html.escape(str(t_lab[r]))} · {p["id"]}"' in html_text, (p["id"], t_lab[r])
    assert "<odd & class>" not in html_text

    # beside an approximate graph, the compared rows' nearest reference rows come from its index: the same leaks
    spec["report"], spec["output"] = {"neighbour_index": "approximate"}, {"dir": "out-approx"}
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    again = json.loads((tmp_path / "out-approx" / "summary.json").read_text())
    assert again["models"][0]["layers"][0]["metrics"]["neighbour_index"].startswith("approximate")
    assert again["leakage"][0]["pairs"] == leak["pairs"]
    del spec["report"]

    # vectors of another width: one clear line naming the compared dataset, no report
    np.save(tmp_path / "b_v.npy", t_vec[:, :32])
    spec["output"] = {"dir": "out2"}
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code != 0 and "datasets[1]" in err and "same model" in err and "Traceback" not in err
    assert not (tmp_path / "out2" / "report.html").exists()

    # precomputed against images: a spec error before anything runs
    np.savez(tmp_path / "imgs.npz", images=imgs[:50], labels=d.target[:50])
    spec["datasets"][1] = {"kind": "npz", "path": "imgs.npz"}
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 2 and "precomputed" in err and "Traceback" not in err


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_cross_nearest_is_exact_in_small_blocks(metric):
    """Blocks bounded on both sides (queries and reference rows) give brute force's answer."""
    from scipy.spatial.distance import cdist

    from reportgen.compute.reference_search import cross_nearest

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3000, 12)).astype(np.float32), rng.normal(size=(700, 12)).astype(np.float32)
    d = cdist(b, a, metric="cosine" if metric == "cosine" else "euclidean")
    for block in (64 << 20, 100_000):  # one block; many blocks each way
        arg, dist = cross_nearest(a, b, metric=metric, block_bytes=block)
        assert np.array_equal(arg, d.argmin(1)) and np.allclose(dist, d.min(1), atol=1e-5)
    arg, dist = cross_nearest(a, b[:0], metric=metric)  # no compared rows: nothing to find, no error
    assert arg.shape == dist.shape == (0,)


def test_a_million_of_flags_do_not_flood_the_maps(tmp_path):
    """When nearly every sample is flagged (tiled copies: each an exact duplicate), the interactive
    points and the dots of a sampled map take each flag's worst in turn up to their caps, and say so."""
    from sklearn.datasets import load_digits

    d = load_digits()
    reps = 3
    vec = np.tile(d.data[:400].astype(np.float32), (reps, 1))
    vec += np.random.default_rng(0).normal(0, 0.01, vec.shape).astype(np.float32)
    np.save(tmp_path / "v.npy", vec)
    np.save(tmp_path / "i.npy", np.tile((d.images[:400] * 255 / 16).astype(np.uint8), (reps, 1, 1)))
    (tmp_path / "m.tsv").write_text("".join(f"{x}\n" for x in np.tile(d.target[:400], reps)))
    spec = {
        "title": "tiled",
        "dataset": {"kind": "embeddings", "vectors": "v.npy", "images": "i.npy", "metadata": "m.tsv"},
        "reducers": ["pca"],
        "report": {"interactive_points": 150, "map_cap": 100, "linked_points": 40},
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"][0]["layers"][0]["metrics"]["duplicates"] == 800  # every row repeats another
    html = (tmp_path / "out" / "report.html").read_text()
    island = json.loads(html.split('<script type="application/json" id="rg-data">', 1)[1].split("</script>", 1)[0])
    assert len(island["ids"]) <= max(150, len(s["cards"])) < 1200
    assert "worst in turn are among the dots" in html


def test_a_leak_gallery_shows_near_twins_beside_identical_ones():
    """Leaks sort most alike first, identical ones (difference 0) ahead: a gallery of the first 16
    of 108 identical and 27 edited leaks showed no edited one. Now up to half of it each kind, the
    rest to the kind with more, each kind's first, in order; all of them where they fit."""
    from reportgen.sections.datasets import shown_leaks

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, cap = int(rng.integers(0, 60)), int(rng.integers(1, 30))
        exact = np.sort(rng.random(n) < rng.random())[::-1]  # identical ones first, as leaks sort
        s = shown_leaks(exact, cap)
        near, same = np.flatnonzero(~exact), np.flatnonzero(exact)
        assert len(s) == min(cap, n) and np.all(np.diff(s) > 0)
        k_near = int((~exact[s]).sum())
        assert k_near == min(len(near), max(cap // 2, cap - len(same)))
        assert set(s.tolist()) == set(near[:k_near].tolist()) | set(same[: len(s) - k_near].tolist())
    s = shown_leaks(np.r_[np.ones(108, bool), np.zeros(27, bool)], 16)
    assert len(s) == 16 and int(s.__lt__(108).sum()) == 8
