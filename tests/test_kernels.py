"""The fast numeric kernels (neighbour graph, PCA eigensolver, UMAP on a shared graph) against
independent computations by scikit-learn and SciPy."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from reportgen.compute.brute_force import exact_search, top_m
from reportgen.compute.neighbours import exact_graph as neighbour_graph
from reportgen.compute.pca import _spectrum_and_top, fit_pca


def _digits(n_copies: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real digits; copies get pixel noise so they are distinct samples."""
    d = load_digits()
    rng = np.random.default_rng(seed)
    x = np.vstack([d.data + (rng.normal(scale=0.5, size=d.data.shape) if i else 0) for i in range(n_copies)]).astype(
        np.float32
    )
    return x, np.tile(d.target, n_copies)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbour_graph_equals_sklearn_brute_force(metric):
    x, _ = _digits()
    # small blocks: several score blocks and a ragged last one
    g = neighbour_graph(x, 12, metric=metric, block_bytes=4 * len(x) * 100)
    d, j = NearestNeighbors(n_neighbors=13, metric=metric, algorithm="brute").fit(x.astype(np.float64)).kneighbors(x)
    assert g.indices.shape == (len(x), 12)
    assert not (g.indices == np.arange(len(x))[:, None]).any()  # never its own neighbour
    np.testing.assert_allclose(g.distances, d[:, 1:], atol=1e-4 if metric == "euclidean" else 1e-6)
    # the indices carry those distances (so they differ from scikit-learn's only among ties:
    # digits' integer pixels tie often in euclidean distance)
    xd = x.astype(np.float64)
    if metric == "cosine":
        u = xd / np.linalg.norm(xd, axis=1, keepdims=True)
        own = 1 - np.einsum("ik,ijk->ij", u, u[g.indices])
    else:
        own = np.linalg.norm(xd[g.indices] - xd[:, None, :], axis=-1)
    np.testing.assert_allclose(own, g.distances, atol=1e-4 if metric == "euclidean" else 1e-6)
    assert (g.indices != j[:, 1:]).mean() < (0.05 if metric == "euclidean" else 0.002)
    assert np.all(np.diff(g.distances, axis=1) >= 0)


def test_neighbour_graph_duplicates_and_determinism():
    x, _ = _digits()
    x = np.vstack([x[:200], x[:200]])  # every sample has an exact duplicate at distance 0
    g = neighbour_graph(x, 5, metric="euclidean")
    n = 200
    assert np.array_equal(g.indices[:n, 0], np.arange(n) + n) and np.array_equal(g.indices[n:, 0], np.arange(n))
    assert np.all(g.distances[:, 0] == 0)
    again = neighbour_graph(x, 5, metric="euclidean")
    assert np.array_equal(g.indices, again.indices)


@pytest.mark.parametrize("case", ["random", "zero", "repeated", "rank_one"])
def test_spectrum_and_top_vectors_equal_scipy(case):
    rng = np.random.default_rng(1)
    d, k = 40, 6
    if case == "random":
        a = rng.normal(size=(d, 60))
        c = a @ a.T
    elif case == "zero":
        c = np.zeros((d, d))
    elif case == "repeated":
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        c = q @ np.diag(np.r_[[5.0] * 3, [2.0] * 10, np.linspace(1, 0.1, d - 13)]) @ q.T
    else:
        v = rng.normal(size=(d, 1))
        c = v @ v.T
    evals, vecs = _spectrum_and_top(c, k)
    np.testing.assert_allclose(evals, np.sort(np.linalg.eigvalsh(c))[::-1], atol=1e-10 * max(1, np.abs(c).max()))
    assert vecs.shape == (d, k)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(k), atol=1e-8)
    # each vector is an eigenvector of its eigenvalue (holds for degenerate spectra too)
    np.testing.assert_allclose(c @ vecs, vecs * evals[:k], atol=1e-8 * max(1, np.abs(c).max()))


def test_fit_pca_matches_sklearn_on_float32_and_float64():
    from sklearn.decomposition import PCA

    x, _ = _digits()
    for arr in (x, x.astype(np.float64)):
        ours = fit_pca(arr, 10)
        ref = PCA(10, svd_solver="full").fit(np.asarray(arr, np.float64))
        np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-4)
        np.testing.assert_allclose(np.abs(ours.components @ ref.components_.T), np.eye(10), atol=1e-4)
        np.testing.assert_allclose(np.abs(ours.scores), np.abs(ref.transform(np.asarray(arr, np.float64))), atol=1e-3)
        assert ours.eigenvalues.sum() == pytest.approx(
            np.var(np.asarray(arr, np.float64), axis=0, ddof=1).sum(), rel=1e-6
        )


@pytest.mark.slow
def test_umap_reuses_the_layer_graph(monkeypatch):
    import pynndescent
    from sklearn.manifold import trustworthiness

    from reportgen.reducers import UmapParams, make_reducer

    def run_umap(x, params, *, seed, graph):
        return make_reducer(params).fit(x, seed=seed, graph=graph)

    def no_search(*a, **k):
        raise AssertionError("pynndescent ran although the layer's graph was given")

    x, y = _digits(3)  # 5,391 samples: above umap-learn's all-pairs cut-off of 4,096
    g = neighbour_graph(x, 14, metric="euclidean")
    with monkeypatch.context() as m:
        m.setattr(pynndescent.NNDescent, "__init__", no_search)
        proj = run_umap(x, UmapParams(metric="euclidean"), seed=0, graph=g)
    assert proj.params["neighbours"] == "the layer's exact graph"
    assert not proj.can_transform  # a map fitted on a given graph cannot place other samples
    sub = np.random.default_rng(0).choice(len(x), 1500, replace=False)
    assert trustworthiness(x[sub], proj.coords[sub], n_neighbors=10) > 0.9
    # the map separates the classes: 10-NN accuracy in 2-D
    g2 = neighbour_graph(proj.coords, 10, metric="euclidean")
    assert (np.array([np.bincount(y[r]).argmax() for r in g2.indices]) == y).mean() > 0.85
    assert proj.params["init"] == "spectral"
    # above SPECTRAL_UP_TO, auto starts from PCA: as good a map
    import reportgen.reducers.umap as umap_reducer

    monkeypatch.setattr(umap_reducer, "SPECTRAL_UP_TO", 5_000)
    pca_init = run_umap(x, UmapParams(metric="euclidean"), seed=0, graph=g)
    assert pca_init.params["init"] == "pca"
    assert trustworthiness(x[sub], pca_init.coords[sub], n_neighbors=10) > 0.9
    g3 = neighbour_graph(pca_init.coords, 10, metric="euclidean")
    assert (np.array([np.bincount(y[r]).argmax() for r in g3.indices]) == y).mean() > 0.85
    assert not np.allclose(pca_init.coords, proj.coords)
    # below 4,096 samples too (umap-learn would otherwise compute all pairwise distances)
    small = run_umap(
        x[:1000], UmapParams(metric="euclidean"), seed=0, graph=neighbour_graph(x[:1000], 14, metric="euclidean")
    )
    assert small.params["neighbours"] == "the layer's exact graph"
    assert trustworthiness(x[:1000], small.coords, n_neighbors=10) > 0.9
    # a graph in another metric is not used (below 4,096 samples: umap-learn's all pairs, no pynndescent
    # to compile; above, the same test sends it to pynndescent, 40-60 s of numba compilation here)
    other = run_umap(
        x[:1000], UmapParams(metric="euclidean"), seed=0, graph=neighbour_graph(x[:1000], 14, metric="cosine")
    )
    assert other.params["neighbours"] == "all pairwise distances" and other.can_transform


def test_stage_peaks_are_per_stage_and_nest():
    from reportgen.pipeline import ProcessHooks, Stages

    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    st = Stages(ProcessHooks(reset_peaks=True))
    with st.stage("outer"):
        with st.stage("big"):
            a = np.ones(300 << 17)  # 300 MB, touched
            del a
        with st.stage("small"):
            b = np.ones(1 << 17)  # 1 MB
            del b
    assert st.rss["big"] - st.rss["small"] > 200  # the small stage does not inherit the big one's peak
    assert st.rss["outer"] >= st.rss["big"]  # an outer stage covers its inner stages
    assert set(st.timings) == {"outer", "big", "small"}


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_trust_and_continuity_equal_sklearn(metric):
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness as sk_trust

    from reportgen.compute.kernels import trust_and_continuity

    x, _ = _digits(2)  # the noisy copy has no distance ties
    x = x[1797:]
    maps = {"pca": PCA(2).fit_transform(x), "noise": np.random.default_rng(0).normal(size=(len(x), 2))}
    got = trust_and_continuity(x, maps, k=10, cap=700, seed=3, metric=metric)
    rows = np.sort(np.random.default_rng(3).choice(len(x), 700, replace=False))
    xs = x[rows].astype(np.float64)
    unit = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    for name, y in maps.items():
        t, c, used = got[name]
        assert used == 700
        assert t == pytest.approx(sk_trust(xs, y[rows], n_neighbors=10, metric=metric), abs=1e-9)
        assert c == pytest.approx(sk_trust(y[rows], unit if metric == "cosine" else xs, n_neighbors=10), abs=1e-9)
    assert got["pca"][0] > got["noise"][0] + 0.1 and got["pca"][1] > got["noise"][1] + 0.1


def test_neighbour_queries_keep_the_classes_whose_neighbours_disagree_most():
    """Over ``max_classes`` classes, the typical samples (nearest their centroid) kept are those whose
    neighbours share their label least, in class order; checked against scikit-learn's neighbours."""
    from sklearn.neighbors import NearestNeighbors

    from reportgen.compute.kernels import neighbour_queries
    from reportgen.compute.neighbours import build_graph

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 16)) * 6
    centres[5] = centres[2] + 0.3  # classes 2 and 5 overlap, and 6 and 7
    centres[6] = centres[7] + 0.5
    labels = np.repeat(np.arange(8), 40)
    x = (centres[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)
    graph, _ = build_graph(x, 10, metric="euclidean", method="exact", seed=0)
    rows, classes = neighbour_queries(graph, labels, x, [], n_classes=8)
    assert classes == 8 and [labels[r] for r in rows] == list(range(8))
    xd = x.astype(np.float64)  # class 5's two nearest-centroid samples differ by 2e-4 relative: no float32 sums
    typical = [int(np.flatnonzero(labels == c)[np.argmin(((xd[labels == c] - xd[labels == c].mean(0)) ** 2).sum(1))])
               for c in range(8)]  # fmt: skip
    assert rows == typical
    nn = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x[typical], return_distance=False)[:, 1:]
    agree = (labels[nn] == np.arange(8)[:, None]).mean(1)
    kept, classes = neighbour_queries(graph, labels, x, [], n_classes=8, max_classes=3)
    assert classes == 8 and len(kept) == 3
    assert kept == [typical[c] for c in sorted(np.argsort(agree, kind="stable")[:3])]
    assert agree[[0, 1, 3, 4]].min() > agree[[2, 5, 6, 7]].max()  # the set-up: four classes in two overlapping pairs
    assert {int(labels[r]) for r in kept} <= {2, 5, 6, 7}  # kept among them, not the clear ones


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dims", [64, 128])  # 64: euclidean's bias inside the GEMM (FOLD_DIMS); 128: added after
def test_exact_search_of_new_queries_equals_sklearn_on_any_number_of_threads(metric, dims):
    x, _ = _digits()
    x = x if dims == 64 else np.ascontiguousarray(np.hstack([x, x[:, ::-1] * 0.5]))
    rng = np.random.default_rng(3)
    queries = (x[rng.choice(len(x), 300, replace=False)] + rng.normal(scale=2.0, size=(300, x.shape[1]))).astype(
        np.float32
    )
    queries[:5] = x[:5]  # a query equal to a row finds it at distance 0: only ``queries is x`` leaves it out
    small = 4 * len(x) * 40  # blocks of 40 queries: several per thread and a ragged last one
    from threadpoolctl import threadpool_info

    pools = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
    one = exact_search(queries, x, 10, metric=metric, block_bytes=small, threads=1)
    two = exact_search(queries, x, 10, metric=metric, block_bytes=small, threads=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert [(p["internal_api"], p["num_threads"]) for p in threadpool_info()] == pools  # BLAS's threads given back
    idx, dist = one
    d, _ = (
        NearestNeighbors(n_neighbors=10, metric=metric, algorithm="brute")
        .fit(x.astype(np.float64))
        .kneighbors(queries.astype(np.float64))
    )
    np.testing.assert_allclose(dist, d, atol=1e-4 if metric == "euclidean" else 1e-6)
    assert np.array_equal(idx[:5, 0], np.arange(5)) and np.all(dist[:5, 0] <= 1e-6)
    # the indices carry those distances (ties among the digits' integer pixels may swap rows)
    xd, qd = x.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        u, q = xd / np.linalg.norm(xd, axis=1, keepdims=True), qd / np.linalg.norm(qd, axis=1, keepdims=True)
        own = 1 - np.einsum("ik,ijk->ij", q, u[idx])
    else:
        own = np.linalg.norm(xd[idx] - qd[:, None, :], axis=-1)
    np.testing.assert_allclose(own, dist, atol=1e-4 if metric == "euclidean" else 1e-6)


def test_top_m_keeps_every_tie_whole():
    """Against a direct reading of each row: every value above the m-th, and every column equal to
    it whenever they are more than m together."""
    rng = np.random.default_rng(4)
    for trial in range(60):
        b, n = int(rng.integers(1, 20)), int(rng.integers(1, 2500))
        m = int(rng.integers(1, n + 1 if trial % 2 else max(2, n // 20)))  # half of them search chunks
        scores = rng.integers(0, int(rng.integers(1, 40)), (b, n)).astype(np.float32)  # many ties
        if trial % 3 == 0:
            scores = rng.standard_normal((b, n)).astype(np.float32)
        if trial % 4 == 0:
            scores[:, rng.integers(0, n, n // 3)] = -np.inf
        out = top_m(scores, m)
        for row, got in zip(scores, out, strict=True):
            kept = set(got[got >= 0].tolist())
            th = np.sort(row)[::-1][m - 1]
            above, tied = set(np.flatnonzero(row > th).tolist()), set(np.flatnonzero(row == th).tolist())
            assert above <= kept <= above | tied and len(kept) >= m
            if len(above) + len(tied) > m:
                assert kept == above | tied


def test_tsne_exact_index_gives_opentsne_exact_affinities():
    """t-SNE's neighbours searched by our blocked GEMMs: the same affinities as openTSNE's own exact
    (scikit-learn) index, for the fit and for new samples placed by ``transform``."""
    from openTSNE import affinity

    from reportgen.reducers.tsne import exact_index

    x, _ = _digits()
    z = np.ascontiguousarray(fit_pca(x, 30).scores[:, :30], np.float64)  # continuous: no ties among neighbours
    new = z[:100] + np.random.default_rng(5).normal(scale=0.5, size=(100, 30))
    fitted, rest = z[100:], new
    ours = affinity.PerplexityBasedNN(perplexity=20, knn_index=exact_index(fitted, 60, "euclidean"))
    theirs = affinity.PerplexityBasedNN(fitted, perplexity=20, method="exact", random_state=0)
    np.testing.assert_allclose(ours.P.toarray(), theirs.P.toarray(), atol=1e-7)
    np.testing.assert_allclose(ours.to_new(rest).toarray(), theirs.to_new(rest).toarray(), atol=1e-7)
