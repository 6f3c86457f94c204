"""The report against independent computations, on one real build (conftest ``built``)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reportgen.figures import grid_mosaic, image_mosaic, palette
from tests.conftest import stored
from tests.pages import check_page


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_outputs_written(built):
    res, tmp = built
    out = tmp / "out"
    assert (out / "report.html").stat().st_size > 10_000
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert "effnet--global_pool--scree.png" in names and "effnet--blocks.2--tsne-mosaic.png" in names
    s = _summary(out)
    assert s["dataset"]["samples_used"] == 300 and sum(s["dataset"]["used_per_class"].values()) == 300


def test_variance_ratios_equal_sklearn(built):
    from sklearn.decomposition import PCA

    res, tmp = built
    s = _summary(tmp / "out")
    for layer in s["models"][0]["layers"]:
        x = np.asarray(stored(res, tmp).layers[layer["layer"]], np.float64)
        ref = PCA(n_components=8, svd_solver="full").fit(x).explained_variance_ratio_
        np.testing.assert_allclose(layer["pca"]["explained_variance_ratio"], ref, rtol=1e-4)


def test_galleries_hold_argmin_and_argmax(built):
    from sklearn.decomposition import PCA

    res, tmp = built
    s = _summary(tmp / "out")
    ids = np.asarray(res.ids)
    for layer in s["models"][0]["layers"]:
        x = np.asarray(stored(res, tmp).layers[layer["layer"]], np.float64)
        scores = PCA(n_components=4, svd_solver="full").fit_transform(x)
        for e in layer["extremes"]:
            c = e["component"] - 1
            col = scores[:, c]
            # sklearn's sign may differ: compare as sets of the two ends
            lo, hi = set(ids[np.argsort(col)[:5]]), set(ids[np.argsort(-col)[:5]])
            assert {frozenset(e["low"]), frozenset(e["high"])} == {frozenset(lo), frozenset(hi)}
            assert e["low_scores"] == sorted(e["low_scores"]) and e["high_scores"] == sorted(
                e["high_scores"], reverse=True
            )


def test_neighbours_equal_sklearn(built):
    from sklearn.neighbors import NearestNeighbors

    res, tmp = built
    s = _summary(tmp / "out")
    ids = list(res.ids)
    layer = s["models"][0]["layers"][1]
    x = np.asarray(stored(res, tmp).layers[layer["layer"]], np.float64)
    nn = NearestNeighbors(n_neighbors=9, metric="cosine").fit(x)
    for q in layer["neighbours"]:
        i = ids.index(q["query"])
        d, j = nn.kneighbors(x[i : i + 1])
        expect = [ids[k] for k in j[0] if k != i][:8]
        assert q["neighbours"] == expect
        np.testing.assert_allclose(q["distances"], [dd for dd, k in zip(d[0], j[0]) if k != i][:8], atol=1e-5)


def test_knn_accuracy_matches_sklearn_leave_one_out(built):
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    res, tmp = built
    layer = _summary(tmp / "out")["models"][0]["layers"][1]
    x = np.asarray(stored(res, tmp).layers[layer["layer"]], np.float64)
    ref = cross_val_score(
        KNeighborsClassifier(10, metric="cosine", algorithm="brute"), x, res.report.samples.labels, cv=LeaveOneOut()
    ).mean()
    assert abs(layer["metrics"]["knn_accuracy"] - ref) < 0.02  # tie-breaking differs only
    assert layer["metrics"]["knn_accuracy"] > 0.8  # 300 samples; the 500-sample floor of 0.85 is in test_extract


def test_image_mosaic_has_thumbnail_pixels_at_position():
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 255, (50, 8, 8, 3), dtype=np.uint8)
    coords = rng.normal(size=(50, 2))
    labels = np.arange(50) % 3
    mo = image_mosaic(coords, thumbs, labels, palette(3), cap=50, seed=0)
    last = mo.rows[-1]  # drawn last: nothing covers it
    x, y = mo.positions[-1]
    assert np.array_equal(mo.pixels[y + 2 : y + 10, x + 2 : x + 10], thumbs[last])
    assert np.array_equal(mo.pixels[y, x], palette(3)[labels[last]])  # border in class colour
    # leftmost sample sits at the left edge, rightmost at the right edge
    assert mo.positions[np.argmin(coords[mo.rows, 0]), 0] == 0
    assert mo.positions[np.argmax(coords[mo.rows, 0]), 0] == mo.pixels.shape[1] - mo.tile


def test_grid_mosaic_shows_each_chosen_sample_once():
    rng = np.random.default_rng(1)
    thumbs = np.zeros((200, 4, 4, 3), np.uint8)
    thumbs[:, :, :, 0] = (np.arange(200) % 256)[:, None, None]
    thumbs[:, :, :, 1] = (np.arange(200) // 256)[:, None, None]
    coords = rng.normal(size=(200, 2))
    gm = grid_mosaic(coords, thumbs, np.zeros(200, int), palette(2), cap=100, seed=0)
    assert len(gm.rows) == 100 and len(set(gm.rows.tolist())) == 100
    seen = [int(gm.pixels[y + 2, x + 2, 0]) for x, y in gm.positions]
    assert sorted(seen) == sorted(int(r) for r in gm.rows)
    assert len({(int(x), int(y)) for x, y in gm.positions}) == 100


def test_html_references_nothing_external(built):
    """Self-contained, one script (the report's own, allowed by its hash) and its data island;
    every id unique and every in-page link and image map resolving."""
    _, tmp = built
    p = check_page((tmp / "out" / "report.html").read_text())
    assert [a.get("type") for a, _ in p.scripts] == ["application/json", None]
    assert p.areas and all(a["href"].startswith("#s-") and a.get("title") for a in p.areas)


def test_a_report_without_interactivity_has_no_script(built, tmp_path):
    from reportgen.pipeline import build
    from tests.conftest import make_spec

    d = _own_copy(built[1], tmp_path)
    d["report"] = {**d.get("report", {}), "interactive": False}
    build(make_spec(d), progress=False)
    p = check_page((tmp_path / "out" / "report.html").read_text())
    assert not p.scripts and "script-src 'none'" in p.csp
    assert p.areas  # the maps still link their dots to the cards


def test_hostile_class_names_are_escaped(tmp_path):
    from PIL import Image
    from skimage import data

    from reportgen.pipeline import build
    from tests.conftest import EFFNET, make_spec

    evil = ["<img src=x onerror=alert(1)>", "a&b \"q\" 'q' 😀 עברית"]
    root = tmp_path / "imgs"
    for i, name in enumerate(evil):
        (root / name).mkdir(parents=True)
        for j in range(4):
            Image.fromarray(np.roll(data.chelsea()[::8, ::8], 7 * j + 40 * i, axis=1)).save(
                root / name / f"<script>{j}.png"
            )
    spec = make_spec(
        {
            "title": "</title><script>alert(2)</script>",
            "dataset": {"kind": "image_folder", "path": str(root)},
            "models": [{**EFFNET, "input_size": 32, "layers": ["global_pool"]}],
            "reducers": ["pca"],
            "report": {"axes": [[evil[0], evil[1]]]},
            "output": {"dir": str(tmp_path / "out")},
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    build(spec, progress=False)
    html = (tmp_path / "out" / "report.html").read_text()
    p = check_page(html)  # the only scripts: the data island and the report's own, by hash
    assert "x" not in p.refs  # the class name never became an <img src=x>
    island = json.dumps(p.island)
    assert evil[0] in island and "<script>0.png" in island  # in the island's data, as data (JSON-escaped text)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;" in html and "😀" in html and "עברית" in html and "<bdi>" in html
    assert all(r.startswith(("data:", "#")) for r in p.refs)


def _own_copy(tmp, tmp_path) -> dict:
    """The shared build's spec with its own output folder and a copy of the shared cache: a test
    that builds again never writes where other tests read."""
    from tests.conftest import spec_dict

    shutil.copytree(tmp / "cache", tmp_path / "cache")
    d = spec_dict(tmp_path)
    d["output"] = {"dir": str(tmp_path / "out")}
    return d


def test_summary_is_deterministic(built, tmp_path):
    """The shared build computed everything from empty caches; two rebuilds read it all back from a
    copy of those caches: the rebuilds write the same summary byte for byte, the shared build the same
    but for its page's size (its spec's paths differ), and all three the same figures."""
    from reportgen.pipeline import build
    from tests.conftest import make_spec

    res, tmp = built
    assert res.forward_calls > 0 and res.reducer_fits == 2  # the shared build computed what it wrote
    d = _own_copy(tmp, tmp_path)
    out, first = tmp_path / "out", tmp_path / "first"
    build(make_spec(d), progress=False)
    shutil.copytree(out, first)
    again = build(make_spec(d), progress=False)  # the same spec, rebuilt from the caches into the same folder
    assert again.forward_calls == 0 and again.reducer_fits == 0
    assert (first / "summary.json").read_bytes() == (out / "summary.json").read_bytes()

    def computed(folder: Path) -> dict:  # the page shows the spec, whose paths differ: its size is left out
        s = _summary(folder)
        del s["html"]["bytes"], s["html"]["section_bytes"]["page"]
        return s

    assert computed(tmp / "out") == computed(out)
    for f in ("effnet--blocks.2--tsne-mosaic.png", "effnet--global_pool--pca-scatter.png"):
        assert (tmp / "out" / "figures" / f).read_bytes() == (first / "figures" / f).read_bytes()
        assert (first / "figures" / f).read_bytes() == (out / "figures" / f).read_bytes()


def test_second_build_with_other_reducers_runs_no_forward_pass(built, tmp_path):
    from reportgen.pipeline import build
    from tests.conftest import make_spec

    res, tmp = built
    assert res.forward_calls > 0
    d = {**_own_copy(tmp, tmp_path), "reducers": [{"pca": {"n_components": 5}}]}
    again = build(make_spec(d), progress=False)
    assert again.forward_calls == 0 and again.models[0].origin == "cache"


@pytest.mark.slow  # 15-30 s on 2 cores: the fast suite stays within 5 minutes on a slower machine
def test_size_budget_shrinks_and_says_so(built):
    """Over the budget, the report steps down the ladder until it fits, says what it reduced, and
    drops the interactive layer's detail before any evidence (mosaics, galleries, thumbnails)."""
    import dataclasses

    from reportgen.render import LADDER, render_html, render_report

    res, tmp = built
    full = json.loads((tmp / "out" / "run.json").read_text())["html_bytes"]
    first = render_html(res.report, LADDER[1])  # the first step: interactivity only
    smallest = render_html(res.report, LADDER[-1])
    assert len(smallest.html.encode()) < len(first.html.encode()) < full

    def within(mb: float):
        spec = res.spec.model_copy(update={"output": res.spec.output.model_copy(update={"max_html_mb": mb})})
        return render_report(dataclasses.replace(res.report, spec=spec))

    just_under = within((full - 1) / 1e6)
    assert just_under.stats.reductions == (LADDER[1].label,) and not just_under.stats.over_budget
    assert (
        LADDER[1].mosaic_cap == LADDER[1].gallery_fraction == 1.0 and LADDER[1].thumb_quality == LADDER[0].thumb_quality
    )
    small = within((len(smallest.html.encode()) + 1000) / 1e6)
    assert small.stats.reductions and not small.stats.over_budget
    assert len(small.html.encode("utf-8")) == small.stats.html_bytes <= len(smallest.html.encode()) + 1000
    assert "To stay within the size budget" in small.html
    assert sum(small.stats.section_bytes.values()) == small.stats.html_bytes
    check_page(small.html)
    too_small = within(0.1)
    assert too_small.stats.over_budget and "over the 0.1 MB budget" in too_small.html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it as root)")
def test_headless_chromium_opens_report_offline(built, tmp_path):
    _, tmp = built
    html = tmp / "out" / "report.html"
    shot = tmp_path  # test outputs stay under pytest's temporary folders
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        "--proxy-server=http://0.0.0.0:9",
        "--proxy-bypass-list=<-loopback>",
        "--disable-background-networking",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot / 'report.png'}",
        html.as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert (shot / "report.png").stat().st_size > 50_000
    log = run.stderr
    console = [l for l in log.splitlines() if "CONSOLE" in l or "Refused to" in l or "net::ERR" in l]
    assert not console, console
    dom = subprocess.run(
        [c for c in cmd if not c.startswith("--screenshot")][:-1] + ["--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Extremity galleries" in dom.stdout and "Nearest neighbours" in dom.stdout


def test_rebuild_with_report_options_only_refits_nothing(built, tmp_path):
    from reportgen.pipeline import build
    from tests.conftest import make_spec

    res, tmp = built
    assert res.reducer_fits == 2  # t-SNE on two layers
    d = {**_own_copy(tmp, tmp_path), "title": "renamed"}
    d["report"] = {**d["report"], "gallery_size": 3}
    again = build(make_spec(d), progress=False)
    assert again.forward_calls == 0 and again.reducer_fits == 0
    # nor does it copy and compare images again to calibrate the near-duplicate search
    assert again.stats.reused.get("twin-calibration") == 1 and "twin-calibration" not in again.stats.computed
    np.testing.assert_array_equal(
        again.models[0].layers[0].maps["tsne"].coords, res.models[0].layers[0].maps["tsne"].coords
    )
    d["reducers"] = [{"pca": {"n_components": 8}}, {"tsne": {"perplexity": 15, "n_iter": 250}}]
    changed = build(make_spec(d), progress=False)
    assert changed.forward_calls == 0 and changed.reducer_fits == 2  # only the changed reducer, on each layer
