"""Large inputs on small budgets: the approximate neighbour graph against exact search, layers
streamed from memory-mapped files, maps fitted on a stated sample with every sample still counted,
and clear errors for inputs that cannot be streamed. Sizes are small here (thresholds lowered);
benchmarks/scaling.py runs the million-sample case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reportgen.compute.neighbours import build_graph, exact_graph, graph_recall
from tests.conftest import run, write


def _features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real images (scikit-learn digits, with pixel noise for the copies) and features from them:
    the pixels, a random ReLU projection (a 'layer') - (vectors float32 (n, 256), labels, images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    reps = -(-n // len(d.data))
    imgs = np.concatenate([d.images + (rng.normal(scale=1.0, size=d.images.shape) if i else 0) for i in range(reps)])[
        :n
    ]
    labels = np.tile(d.target, reps)[:n]
    w = rng.normal(size=(64, 256)).astype(np.float32)
    x = np.maximum(imgs.reshape(n, 64).astype(np.float32) @ w, 0)
    return x.astype(np.float32), labels, np.clip(imgs * 16, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_approximate_graph_against_exact_search(metric):
    from sklearn.neighbors import NearestNeighbors

    x, _, _ = _features(6000)
    g, q = build_graph(x, 15, metric=metric, method="approximate", seed=0)
    assert q.method.startswith("approximate") and q.queries == 500
    exact = exact_graph(x, 15, metric=metric)
    full = float(np.mean([len(set(a) & set(b)) / 15 for a, b in zip(g.indices, exact.indices)]))
    assert full >= 0.95 and abs(q.recall - full) < 0.02  # the sampled recall estimates the true one
    rows = np.arange(0, 6000, 7)
    assert graph_recall(x, exact, rows) == 1.0
    # every listed neighbour carries its exact distance (scikit-learn), sorted
    d = NearestNeighbors(metric=metric, algorithm="brute").fit(x.astype(np.float64))
    some = np.arange(0, 6000, 97)
    for i in some:
        ref = np.asarray(d._fit_X[g.indices[i]])  # the listed neighbours' vectors
        if metric == "cosine":
            a = x[i] / np.linalg.norm(x[i])
            own = 1 - (ref / np.linalg.norm(ref, axis=1, keepdims=True)) @ a
        else:
            own = np.linalg.norm(ref - x[i], axis=1)
        np.testing.assert_allclose(g.distances[i], own, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(g.distances, axis=1) >= -1e-12) and not (g.indices == np.arange(6000)[:, None]).any()
    again, _ = build_graph(x, 15, metric=metric, method="approximate", seed=0)
    assert np.array_equal(g.indices, again.indices)  # the same graph on every run


def test_the_hnsw_links_are_the_same_whatever_the_threads():
    """The index proposing candidates is built on every core only where faiss builds it the same
    on any number of threads: the whole index (levels, links, vectors) serialised after a build on
    one thread and on three (batches of more than 100 rows run in parallel at 20,000) is the same,
    byte for byte; one vector changed changes it."""
    import faiss

    from reportgen.compute.neighbours import deterministic_hnsw_build, hnsw_index

    x, _, _ = _features(20_000)
    z = np.ascontiguousarray(x[:, :64] / np.linalg.norm(x[:, :64], axis=1, keepdims=True).clip(1e-6))
    one = faiss.serialize_index(hnsw_index(z, threads=1))  # a copy: the index itself may go
    if not deterministic_hnsw_build():
        pytest.skip(f"faiss {faiss.__version__} adds with locks: the index is built on one thread")
    assert np.array_equal(one, faiss.serialize_index(hnsw_index(z, threads=3)))
    assert np.array_equal(one, faiss.serialize_index(hnsw_index(z)))  # the default: every core
    z[5] = z[6]
    assert not np.array_equal(one, faiss.serialize_index(hnsw_index(z, threads=1)))


def test_the_approximate_graph_is_the_same_whatever_the_threads(monkeypatch):
    """The re-ranking splits rows between threads, never a sum: one thread and three (more than
    this machine may have) give the same graph, bit for bit, across several hand-back chunks."""
    from reportgen.compute import neighbours

    x, _, _ = _features(3000)
    monkeypatch.setattr(neighbours, "RELEASE_EVERY", 1000)  # three chunks, each re-ranked in blocks
    one = neighbours.approximate_graph(x, 10, workers=1)
    three = neighbours.approximate_graph(x, 10, workers=3)
    assert np.array_equal(one.indices, three.indices) and np.array_equal(one.distances, three.distances)
    assert not (one.indices == np.arange(3000)[:, None]).any()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_another_sets_nearest_rows_are_searched_the_way_the_graph_was(metric):
    """A compared set's nearest reference rows (the leak search's candidates from the layer) come
    from the approximate graph's own index: the same answer from the index the graph kept and from
    one built again (a graph read from the cache keeps none), every noisy copy of a reference row
    found, the nearest row of nearly every other query as exact search finds it, with its exact
    distance; beside an exact graph, exact search itself."""
    import dataclasses

    from reportgen.compute.reference_search import cross_nearest, reference_nearest

    x, _, _ = _features(6400)
    x, fresh = x[:6000], x[6000:]  # other pictures of the same digits, in the same "layer"
    rng = np.random.default_rng(1)
    copied = rng.choice(6000, 100, replace=False)
    q = np.concatenate([x[copied] + rng.normal(scale=0.01, size=(100, x.shape[1])).astype(np.float32), fresh])
    g, _ = build_graph(x, 15, metric=metric, method="approximate", seed=0)
    assert g.index is not None
    kept = reference_nearest(x, q, g, metric=metric, seed=0)
    again = reference_nearest(x, q, dataclasses.replace(g, index=None), metric=metric, seed=0)
    assert np.array_equal(kept[0], again[0]) and np.array_equal(kept[1], again[1])
    exact = cross_nearest(x, q, metric=metric)
    assert np.array_equal(kept[0][:100], copied)
    same = kept[0] == exact[0]
    assert same.mean() >= 0.95, same.mean()
    np.testing.assert_allclose(kept[1][same], exact[1][same], rtol=1e-5, atol=1e-6)
    assert np.all(kept[1][~same] >= exact[1][~same] - 1e-6)  # a miss is a farther row, never a nearer one
    e = exact_graph(x, 15, metric=metric)
    assert e.index is None
    beside_exact = reference_nearest(x, q, e, metric=metric, seed=0)
    assert np.array_equal(beside_exact[0], exact[0]) and np.array_equal(beside_exact[1], exact[1])


def _precomputed(tmp: Path, n: int, *, nan_rows: int = 0) -> dict:
    x, labels, imgs = _features(n)
    if nan_rows:
        x[:nan_rows] = np.nan
    np.save(tmp / "vectors.npy", x)
    np.save(tmp / "images.npy", imgs)
    (tmp / "meta.tsv").write_text("label\tsource\n" + "".join(f"{y}\tdigits\n" for y in labels))
    return {"kind": "embeddings", "vectors": "vectors.npy", "images": "images.npy", "metadata": "meta.tsv"}


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_a_large_input_is_streamed_sampled_and_stated(tmp_path):
    """6,000 precomputed vectors with the thresholds lowered as a million would meet them: the
    approximate graph (recall in the report and summary.json, gated by a check), t-SNE fitted on a
    stated stratified sample of 1,500, every sample placed for the density layer, NaN rows counted."""
    d = {
        "title": "scale",
        "dataset": _precomputed(tmp_path, 6000, nan_rows=3),
        "reducers": ["pca", {"tsne": {"perplexity": 20, "n_iter": 200}}],
        "report": {
            "approximate_above": 2000,
            "map_cap": 1500,
            "mosaic_cap": 300,
            "trustworthiness_cap": 800,
            "probe_cap": 1000,
        },
        "checks": [{"metric": "neighbour_recall", "min": 0.95}],
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][0]
    met = layer["metrics"]
    assert (
        met["neighbour_index"].startswith("approximate")
        and met["neighbour_recall"] >= 0.95
        and met["neighbour_recall_queries"] == 500
    )
    assert s["checks"][0]["metric"] == "neighbour_recall" and s["checks"][0]["passed"]
    tsne = layer["maps"]["tsne"]
    assert tsne["fitted_samples"] == 1500 and tsne["placement"] == "nearest fitted samples"
    assert "fitted on a stratified sample of 1,500 of 6,000 samples" in tsne["notes"][0]
    assert "fitted_samples" not in layer["maps"]["pca"]  # PCA maps every sample
    assert met["maps"]["tsne"]["samples"] == 800 and 0.5 < met["trustworthiness_tsne"] <= 1
    assert layer["nonfinite_rows"] == 3 and any("NaN or Inf" in n for n in layer["notes"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Grey hexagons behind: the density of all 6,000 samples" in html and "recall@" in html
    # counts with thousands separators wherever the page states them (the data, the layer, its metrics)
    assert "6,000 samples used" in html and "6,000 samples × 256 features" in html and "all 6,000 samples<" in html


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_place_all_uses_the_maps_transform(tmp_path):
    d = {
        "title": "placed",
        "dataset": _precomputed(tmp_path, 2400),
        "reducers": ["pca", {"tsne": {"perplexity": 15, "n_iter": 150}}],
        "report": {"map_cap": 800, "place_all": True, "mosaic_cap": 100},
        "output": {"dir": "out"},
        "cache_dir": "cache",
    }
    code, out, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 0, err
    tsne = json.loads((tmp_path / "out" / "summary.json").read_text())["models"][0]["layers"][0]["maps"]["tsne"]
    assert (
        tsne["fitted_samples"] == 800
        and tsne["placement"] == "transform"
        and "placed by the fitted map's transform" in tsne["notes"][0]
    )


def test_inputs_that_cannot_be_streamed_get_one_clear_line(tmp_path):
    x, labels, _ = _features(600)
    (tmp_path / "meta.tsv").write_text("label\tsource\n" + "".join(f"{y}\tdigits\n" for y in labels[:599]))
    np.save(tmp_path / "v.npy", x)
    base = {"title": "bad", "reducers": ["pca"], "output": {"dir": "out"}, "cache_dir": "cache"}
    code, _, err = run(
        "build",
        str(write(tmp_path, {**base, "dataset": {"kind": "embeddings", "vectors": "v.npy", "metadata": "meta.tsv"}})),
        "-q",
    )
    assert code == 1 and err.count("\n") == 1 and "599 metadata rows for 600 vectors" in err  # row counts disagree
    (tmp_path / "meta.tsv").write_text("".join(f"{y}\n" for y in labels))
    np.savez_compressed(tmp_path / "v.npz", layer=x)
    d = {**base, "dataset": {"kind": "embeddings", "vectors": "v.npz", "metadata": "meta.tsv", "memory_gb": 0.0001}}
    code, _, err = run("build", str(write(tmp_path, d)), "-q")
    assert (
        code == 1
        and err.count("\n") == 1
        and "more than the 0.0 GB memory budget" in err
        and "save each array as its own .npy" in err
    )
    np.save(tmp_path / "v64.npy", x.astype(np.float64))
    d = {**base, "dataset": {"kind": "embeddings", "vectors": "v64.npy", "metadata": "meta.tsv", "memory_gb": 0.0001}}
    code, _, err = run("build", str(write(tmp_path, d)), "-q")
    assert code == 1 and "save them as float32" in err
    assert not (tmp_path / "out").exists()


def test_streaming_passes_keep_resident_memory_flat(tmp_path):
    """A streamed pass over a memory-mapped layer hands every chunk's pages back: resident memory
    does not grow with the file (a full read would add its size)."""
    from reportgen.compute.pca import fit_pca
    from reportgen.streaming import nonfinite_rows

    def rss_mb() -> float:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(400_000, 256))  # 400 MB
    for s in range(0, 400_000, 50_000):
        big[s : s + 50_000] = np.random.default_rng(s).normal(size=(50_000, 256)).astype(np.float32)
    del big
    x = np.load(path, mmap_mode="r")
    before = rss_mb()
    assert len(nonfinite_rows(x)) == 0
    p = fit_pca(x, 5)
    assert p.scores.shape == (400_000, 5)
    assert rss_mb() - before < 150, (before, rss_mb())  # the file is 400 MB; scores are 16 MB
