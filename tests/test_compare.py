"""Comparing models: one shared frame, linear CKA properties, per-class change."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reportgen.compute.similarity import linear_cka
from tests.conftest import EFFNET, make_spec


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from reportgen.pipeline import build

    tmp = tmp_path_factory.mktemp("compare")
    random_init = {**{k: v for k, v in EFFNET.items() if k != "weights"}, "name": "random"}
    spec = make_spec(
        {
            "title": "compare",
            "dataset": {"kind": "digits", "limit": 300},
            "models": [
                {**EFFNET, "layers": ["blocks.2", "global_pool"]},
                {**random_init, "layers": ["blocks.2", "global_pool"]},
            ],
            "reducers": ["pca", {"tsne": {"perplexity": 20, "n_iter": 250}}],
            "report": {"gallery_components": 2, "audit": False},  # models compared, not data audited
            "checks": [{"metric": "neighbour_overlap", "min": 0.5}],
            "output": {"dir": str(tmp / "out")},
            "cache_dir": str(tmp / "cache"),
        }
    )
    return build(spec, progress=False), tmp


def _embeddings(res, tmp, model: str, layer: str) -> np.ndarray:
    from reportgen.store import EmbeddingStore

    m = next(m for m in res.models if m.model.name == model)
    return np.asarray(EmbeddingStore(tmp / "cache").load(m.embeddings_key).layers[layer], np.float64)


def test_reference_points_stay_at_fitted_coordinates_and_other_model_is_in_its_frame(compared):
    from sklearn.decomposition import PCA

    res, tmp = compared
    comp = res.report.build_findings["compare_models"]
    assert comp.reference == "effnet"
    ref = res.models[0].layer("global_pool")
    frame = next(f for f in comp.frames if f.layer == "global_pool" and f.method == "pca")
    np.testing.assert_array_equal(frame.coords["effnet"], ref.maps["pca"].coords)
    # the other model in the reference's frame: scikit-learn's PCA fitted on the reference, applied
    # to the other model's embeddings (components agree up to sign)
    x_ref, x_b = _embeddings(res, tmp, "effnet", "global_pool"), _embeddings(res, tmp, "random", "global_pool")
    sk = PCA(2, svd_solver="full").fit(x_ref)
    signs = np.sign((sk.transform(x_ref) * ref.maps["pca"].coords).sum(0))
    np.testing.assert_allclose(ref.maps["pca"].coords, sk.transform(x_ref) * signs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(frame.coords["random"], sk.transform(x_b) * signs, rtol=1e-3, atol=1e-2)
    tsne = next(f for f in comp.frames if f.layer == "global_pool" and f.method == "tsne")
    assert tsne.coords["random"].shape == (300, 2) and np.isfinite(tsne.coords["random"]).all()


def test_cka_matrix_and_report_section(compared):
    res, tmp = compared
    comp = res.report.build_findings["compare_models"]
    assert comp.cka.shape == (4, 4)
    np.testing.assert_allclose(np.diag(comp.cka), 1.0)
    t = comp.cka_stats
    assert np.allclose(comp.cka, comp.cka.T) and (np.abs(comp.cka) <= 1 + 1e-9).all()
    assert (t.biased >= -1e-9).all() and (t.biased <= 1 + 1e-9).all()
    off = ~np.eye(4, dtype=bool)
    assert ((t.p[off] > 0) & (t.p[off] <= 1)).all() and (t.low[off] <= t.high[off]).all()
    names = list(comp.names)
    i, j = names.index("effnet · global_pool"), names.index("random · global_pool")
    assert t.biased[i, j] > comp.cka[i, j]  # the biased estimator overstates how alike they are
    s = json.loads((tmp / "out" / "summary.json").read_text())
    assert s["comparison"]["cka"]["estimator"].startswith("debiased") and len(s["comparison"]["cka"]["p"]) == 4
    random_layers = next(m for m in s["models"] if m["name"] == "random")["layers"]
    assert all(abs(l["metrics"]["cka_to_reference"]) <= 1 for l in random_layers)
    assert s["comparison"]["reference"] == "effnet" and len(s["comparison"]["changes"]) == 2
    ch = s["comparison"]["changes"][1]["per_class"]["0"]
    assert 0 <= ch["knn"] <= 1 and ch["centroid_shift"] >= 0
    html = (tmp / "out" / "report.html").read_text()
    assert 'id="compare_models"' in html and "random vs effnet" in html
    assert (tmp / "out" / "figures" / "compare--cka.png").exists()


def test_neighbour_diff_against_an_independent_search(compared):
    """The diff's per-sample overlap is the Jaccard overlap of the two models' 10-neighbour sets
    (checked with scikit-learn's exact search); a random network keeps few neighbourhoods, so the
    neighbour_overlap check fails for it, and the finding links to the diff's gallery."""
    from sklearn.neighbors import NearestNeighbors

    res, tmp = compared
    comp = res.report.build_findings["compare_models"]
    d = next(d for d in comp.diffs if d.layer == "global_pool")
    nn = lambda x: NearestNeighbors(n_neighbors=11, metric="cosine").fit(x).kneighbors(x, return_distance=False)[:, 1:]  # noqa: E731
    a, b = nn(_embeddings(res, tmp, "effnet", "global_pool")), nn(_embeddings(res, tmp, "random", "global_pool"))
    ref = np.array([len(set(p) & set(q)) / len(set(p) | set(q)) for p, q in zip(a, b)])
    assert abs(ref.mean() - d.mean_overlap) < 0.01 and np.corrcoef(ref, d.overlap)[0, 1] > 0.95
    assert d.mean_overlap < 0.5 and d.moved > 0.3
    s = json.loads((tmp / "out" / "summary.json").read_text())
    diff = next(x for x in s["comparison"]["diffs"] if x["layer"] == "global_pool")
    assert diff["neighbour_overlap"] == pytest.approx(d.mean_overlap) and len(diff["most_changed"]) == 8
    assert min(x["overlap"] for x in diff["most_changed"]) == pytest.approx(d.overlap.min())
    failed = {(c.model, c.layer) for c in res.report.checks if not c.passed}
    assert ("random", "global_pool") in failed and not any(
        m == "effnet" for m, _ in failed
    )  # the reference has no diff to itself
    html = (tmp / "out" / "report.html").read_text()
    head = next(f for f in s["findings"] if f["id"].startswith("diff/") and "global_pool" in f["id"])
    assert f'id="{head["evidence"][1:]}"' in html and html.index('id="findings"') < html.index(
        head["evidence"][1:] + '"'
    )


def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _kornblith_debiased(x: np.ndarray, y: np.ndarray) -> float:
    """The reference implementation (Kornblith et al. 2019's notebook): n x n Gram matrices,
    centred with ``unbiased=True``."""

    def centre(g: np.ndarray) -> np.ndarray:
        g = g.copy()
        n = len(g)
        np.fill_diagonal(g, 0)
        means = np.sum(g, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0)
        return g

    gx, gy = centre(x @ x.T), centre(y @ y.T)
    return float(gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 80), st.integers(2, 30))
def test_debiased_cka_is_kornblith_s_without_the_gram_matrices(seed, n, d):
    from reportgen.compute.similarity import debiased_cka

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)  # not centred: the estimator does not care
    y = x @ rng.normal(size=(d, d + 3)) + rng.normal(size=(n, d + 3))
    assert debiased_cka(x, y) == pytest.approx(_kornblith_debiased(x, y), rel=1e-6, abs=1e-9)
    assert debiased_cka(x, x) == pytest.approx(1.0)
    assert debiased_cka(x @ _orthogonal(rng, d) * 3.0, y) == pytest.approx(debiased_cka(x, y), rel=1e-6, abs=1e-9)


def test_debiased_cka_reads_zero_for_unrelated_representations():
    """Shuffled pairing at 1,000 samples reads 0 +- 0.02, where the biased estimator reads about
    half; the permutation p-value of a shuffled pairing is not small; a real relation is."""
    from reportgen.compute.similarity import cka_table, debiased_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 1280)).astype(np.float32)
    y = rng.normal(size=(1000, 1280)).astype(np.float32)
    assert linear_cka(x, y) > 0.4 and abs(debiased_cka(x, y)) < 0.02
    real = x[:, :200] @ rng.normal(size=(200, 64)) + rng.normal(size=(1000, 64))
    shuffled = real[rng.permutation(1000)]
    assert abs(debiased_cka(x, shuffled)) < 0.02 and debiased_cka(x, real) > 0.1
    t = cka_table([x, real, shuffled], seed=0)
    assert t.p[0, 1] < 0.01 and t.p[0, 2] > 0.01
    assert t.low[0, 1] <= t.debiased[0, 1] <= t.high[0, 1] and t.high[0, 2] - t.low[0, 2] < 0.1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 60), st.integers(2, 12), st.floats(0.01, 100))
def test_linear_cka_properties(seed, n, d, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d + 1))
    assert linear_cka(x, x) == pytest.approx(1.0)
    base = linear_cka(x, y)
    assert linear_cka(x @ _orthogonal(rng, d), y) == pytest.approx(base, rel=1e-6, abs=1e-9)  # rotation
    assert linear_cka(x * scale, y) == pytest.approx(base, rel=1e-6, abs=1e-9)  # isotropic scaling
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert -1e-9 <= base <= 1 + 1e-9
