"""Golden render test: a small hand-built result (no model, no reducer run) rendered in
milliseconds and checked section by section."""

from __future__ import annotations

import re

import numpy as np
import pytest

from reportgen.analyses.axes import AxesFinding
from reportgen.analyses.classes import ClassMeansFinding
from reportgen.analyses.extremes import ExtremesFinding
from reportgen.analyses.hard import HardFinding
from reportgen.analyses.image_stats import ImageStatsFinding
from reportgen.analyses.maps import MapQuality, MapsFinding
from reportgen.analyses.metrics import MetricsFinding
from reportgen.analyses.neighbours import NeighboursFinding
from reportgen.analyses.pca import PcaFinding
from reportgen.compute.kernels import AxisFinding, ComponentEnds, HardSample
from reportgen.compute.neighbours import GraphQuality
from reportgen.images import Preprocess
from reportgen.render import LADDER, render_html
from reportgen.report import ReportData
from reportgen.results import (
    CheckResult,
    DatasetInfo,
    LayerResult,
    MapResult,
    ModelInfo,
    ModelResult,
    RunStats,
    Samples,
    count,
    percent,
    slug,
)
from reportgen.spec import loads_spec
from tests.pages import check_page

CLASSES = ("cat <1>", "dog & co")


def hand_built() -> ReportData:
    n = 6
    labels = np.array([0, 0, 0, 1, 1, 1])
    thumbs = np.zeros((n, 8, 8, 3), np.uint8)
    thumbs[:, :, :, 0] = (np.arange(n) * 40)[:, None, None]
    samples = Samples(tuple(f"img-{i}" for i in range(n)), labels, CLASSES, thumbs, np.zeros((n, 4)))
    scores = np.array([[-2.0, 0.1], [-1.0, -0.3], [-0.5, 0.2], [0.5, 0.0], [1.0, 0.4], [2.0, -0.4]])
    coords = scores.astype(np.float32)
    pca = PcaFinding(np.array([0.6, 0.25]), np.array([1.2, 0.5, 0.3]), 2.0, np.array([0.9, 0.05]), scores)
    maps = {
        "pca": MapResult(
            "pca",
            "PCA (components 1 and 2)",
            coords,
            {"components": [1, 2]},
            (),
            "axes are the first two principal components.",
        ),
        "tsne": MapResult(
            "tsne",
            "t-SNE (openTSNE)",
            coords[::-1].copy(),
            {"perplexity": 1.5},
            ("perplexity lowered from 30 to 1.5",),
            "",
        ),
    }
    findings = {
        "metrics": MetricsFinding(
            0.8333, 3, "cosine", labels, 0.75, 6, 0.41, 6, GraphQuality("approximate (test index)", 0.97, 4, 3), 4.25
        ),
        "pca": pca,
        "class_association": ClassMeansFinding(np.array([[-1.2, 0.1], [1.2, -0.1]])),
        "image_statistics": ImageStatsFinding(
            np.array([[0.7, 0.0], [0.0, 0.1], [0.0, 0.0], [0.0, 0.0]]), ((0, "brightness", 0.7),)
        ),
        "extremes": ExtremesFinding(
            (ComponentEnds(0, np.array([0, 1]), np.array([5, 4])),),
            (np.array([-2.0, -1.0]),),
            (np.array([2.0, 1.0]),),
            np.array([0.6]),
            np.array([0.9]),
        ),
        "maps": MapsFinding(maps, {"pca": MapQuality(0.91, 0.93, 6), "tsne": MapQuality(0.88, None, 6)}),
        "neighbours": NeighboursFinding(
            np.array([0, 3]), np.array([[1, 2], [4, 2]]), np.array([[0.1, 0.2], [0.15, 0.3]]), "cosine"
        ),
        "hard": HardFinding((HardSample(2, 0, 1, 0.33),), np.array([5]), np.array([0.42]), 3),
        "axes": AxesFinding(
            (AxisFinding(CLASSES[0], CLASSES[1], np.linspace(-0.2, 1.2, n), np.array([0, 2, 3, 5]), 1.0),)
        ),
    }
    metrics = {
        "knn_accuracy": 0.8333,
        "knn_k": 3,
        "metric": "cosine",
        "components_for_90": 3,  # as the finding's spectrum gives them (the header reads the finding)
        "participation_ratio": 2.247,
        "variance_top10": 1.0,
        "linear_probe_accuracy": 0.75,
        "silhouette": 0.41,
        "trustworthiness_pca": 0.91,
        "trustworthiness_tsne": 0.88,
    }
    layer = LayerResult("net", "block<1>", "mean", 5, n, 0, ("a note about this layer",), maps, findings, metrics)
    info = ModelInfo(
        "net", "tiny", "random init", "ab" * 32, Preprocess(8, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0), "cpu"
    )
    spec = loads_spec(
        "title: 'Golden <report>'\ndataset: {kind: digits}\nmodels: [{name: net, timm: resnet18, layers: [layer1]}]\n"
        "reducers: [pca, tsne]\nreport: {axes: [['cat <1>', 'dog & co']]}\nseed: 7\n"
    )
    checks = (
        CheckResult(
            "floor",
            "knn_accuracy",
            "net",
            "block<1>",
            0.8333,
            None,
            False,
            "net/block<1>: knn_accuracy = 0.8333; required >= 0.9",
        ),
    )
    return ReportData(
        spec=spec,
        dataset=DatasetInfo(
            "toy", "digits", "f" * 64, CLASSES, "all", {c: 3 for c in CLASSES}, {c: 3 for c in CLASSES}, True
        ),
        samples=samples,
        models=(ModelResult(info, "k" * 32, "computed", 1, (layer,)),),
        build_findings={},
        bad=(("img-9", "cannot decode"),),
        notes=("a build note",),
        checks=checks,
        stats=RunStats({"extract: net": 1.5}, {"extract: net": 300.0}, 1, 1, {}, {}),
        versions={"python": "3.11", "reportgen": "test"},
    )


@pytest.fixture(scope="module")
def html() -> str:
    html, files, sizes, _ = render_html(hand_built(), LADDER[0])
    assert sum(sizes.values()) == len(html.encode("utf-8"))
    base = f"net--{slug('block<1>')}--"
    expected = {
        "scree",
        "class-means",
        "image-stats",
        "pca-scatter",
        "pca-grid",
        "pca-mosaic",
        "tsne-scatter",
        "tsne-grid",
        "tsne-mosaic",
        f"axis-{slug(CLASSES[0])}-{slug(CLASSES[1])}",
    }
    assert {f[len(base) : -4] for f in files} == expected and all(f.startswith(base) for f in files)
    return html


def _section(html: str, anchor: str) -> str:
    """From the element with ``id=anchor`` to the next section heading of the layer."""
    start = html.index(f'id="{anchor}"')
    nxt = re.search(r"<h3 id=|</section>", html[start + 10 :])
    return html[start : start + 10 + (nxt.start() if nxt else len(html))]


def test_page_frame(html):
    assert "<title>Golden &lt;report&gt;</title>" in html and "Content-Security-Policy" in html
    check_page(html)
    assert "a build note" in html
    checks = html[html.index('id="checks"') : html.index('id="summary"')]
    assert (
        "1 of 1 failed" in checks
        and "FAIL" in checks
        and "net/block&lt;1&gt;: knn_accuracy = 0.8333; required &gt;= 0.9" in checks
    )
    summary = html[html.index('id="summary"') : html.index('id="contents"')]
    assert re.search(
        r"block&lt;1&gt;</a></td><td class=\"n\">5</td><td class=\"n\">100\.0 %</td><td class=\"n\">3</td><td "
        r"class=\"n\">0\.833</td>"
        r"<td class=\"n\">0\.750</td><td class=\"n\">0\.410</td><td class=\"n\">0\.910</td><td class=\"n\">0\.880</td>",
        summary,
    ), summary
    data = html[html.index('id="data"') :]
    assert "cat &lt;1&gt;" in data and "dog &amp; co" in data and "img-9" in data and "cannot decode" in data


def test_layer_header_and_metrics(html):
    anchor = next(m for m in re.findall(r'<section id="([^"]+)"', html))
    sec = html[html.index(f'<section id="{anchor}"') :]
    assert (
        "6 samples × 5 features (reshape: mean). kNN accuracy 0.833 (k = 3, cosine). 3 components hold 90 % of the "
        "variance;"
        " participation ratio 2.2 (effective number of dimensions)." in sec
    )
    assert '<p class="warn">a note about this layer</p>' in sec
    metrics = _section(html, f"{anchor}-metrics")
    assert (
        "0.833" in metrics
        and "0.750" in metrics
        and "logistic regression, stratified 5-fold, 6 samples" in metrics
        and "0.410" in metrics
    )
    assert (
        "0.970" in metrics and "recall@3 against exact search on 4 seeded queries; approximate (test index)" in metrics
    )


def test_pca_class_and_image_statistic_sections(html):
    anchor = re.search(r'<section id="([^"]+)"', html).group(1)
    pca = _section(html, f"{anchor}-pca")
    assert re.search(
        r"<td>1</td><td class=\"n\">60\.00 %</td><td class=\"n\">60\.0 %</td><td class=\"n\">0\.90</td>", pca
    )
    assert re.search(
        r"<td>2</td><td class=\"n\">25\.00 %</td><td class=\"n\">85\.0 %</td><td class=\"n\">0\.05</td>", pca
    )
    assert (
        "Class means per component for block&lt;1&gt;" in pca
        and "Possible shortcut features: PC1 tracks brightness (r = 0.70)" in pca
    )


def test_galleries_maps_neighbours_hard_and_axes(html):
    anchor = re.search(r'<section id="([^"]+)"', html).group(1)
    ext = _section(html, f"{anchor}-extremes")
    assert 'PC1 <span class="m">60.0 % of variance · class η² 0.90' in ext and ext.count('<figure class="t"') == 4
    assert "2 of 2: cat &lt;1&gt;" in ext and "2 of 2: dog &amp; co" in ext and "-2.00" in ext
    maps = _section(html, f"{anchor}-maps")
    assert "PCA (components 1 and 2)" in maps and "trustworthiness 0.910, continuity 0.930 (on 6 samples)" in maps
    assert (
        "t-SNE (openTSNE)" in maps
        and "perplexity=1.5" in maps
        and "perplexity lowered from 30 to 1.5" in maps
        and "continuity n/a" in maps
    )
    assert maps.count("<img") == 6  # scatter, grid and mosaic for each map
    nb = _section(html, f"{anchor}-neighbours")
    assert (
        nb.count('class="nb"') == 2 and "0.100" in nb and "0.300" in nb and nb.count("t diff") == 1
    )  # img-2 (cat) next to img-3 (dog)
    hard = _section(html, f"{anchor}-hard")
    assert "<bdi>cat &lt;1&gt;</bdi> → <bdi>dog &amp; co</bdi>" in hard and "33 %" in hard and "0.420" in hard
    axes = _section(html, f"{anchor}-axes")
    assert "100.0 % of both classes on their own side" in axes and axes.count('<figure class="t"') == 4


def test_a_small_share_is_not_written_as_none():
    """489 flagged of a million read "0.0 %" in a headline and in the section's table: where the
    decimals would round a share that is not zero to zero, one significant digit."""
    assert percent(0.000489) == "0.05 %" and percent(0.0123) == "1.2 %" and percent(0) == "0.0 %"
    assert all(percent(s) != "0.0 %" for s in (1e-6, 3e-5, 0.0004, 0.00099))
    assert percent(0.004, 0) == "0.4 %" and percent(0.5, 0) == "50 %" and percent(0.00123, 2) == "0.12 %"
    from reportgen.render import environment

    t = environment().from_string("{{ a|pct(1) }} | {{ b|pct(0) }} | {{ c|pct(1) }}")
    assert t.render(a=0.000489, b=0.004, c=None) == "0.05 % | 0.4 % | n/a"  # the templates' filter too


def test_a_small_image_difference_is_not_written_as_identical():
    """A grey copy of a soft 16-px blob differed from its original by 0.00003 and the leak gallery
    wrote "0.0000" under it, as if the pictures were identical: one significant digit there too."""
    from reportgen.render import environment
    from reportgen.results import difference

    assert difference(0) == "0.0000" and difference(0.0023) == "0.0023" and difference(0.00005) == "0.0001"
    assert all(difference(d) not in ("0.0000", "-0.0000") for d in (3e-5, 1e-7, 4.9e-5))
    assert difference(3e-5) == "0.00003" and difference(1.4e-7) == "0.0000001"
    # float32 rounding of pictures that are the same (a mirrored copy aligned: 6e-14) is none
    assert difference(6e-14) == difference(-2e-13) == "0.0000"
    assert environment().from_string("{{ d|difference }}").render(d=0.00003) == "0.00003"


def test_a_count_of_one_is_singular_in_the_headlines():
    """ "1 pairs of near-duplicate images" read in a report: counts go through ``results.count``."""
    from reportgen.analyses.audit import Audit, AuditFinding
    from reportgen.analyses.base import Where
    from reportgen.options import ReportOptions

    assert count(1, "pair") == "1 pair" and count(0, "pair") == "0 pairs" and count(12_000, "image") == "12,000 images"
    assert count(2, "dimension", "dimensions") == "2 dimensions" and count(1, "query", "queries") == "1 query"
    n = 6
    samples = Samples(
        tuple(f"img-{i}" for i in range(n)),
        np.zeros(n, np.int64),
        CLASSES,
        np.zeros((n, 2, 2, 3), np.uint8),
        np.zeros((n, 4)),
    )
    f = AuditFinding(
        quality=np.ones(n),
        suggested=np.array([1, 0, 0, 0, 0, 0]),
        probe_pred=np.zeros(n, np.int64),
        label_issues=np.array([0]),
        duplicate_groups=(np.array([1, 2]),),
        near_pairs=np.array([[3, 4]]),
        near_distances=np.array([0.01]),
        near_threshold=0.05,
        calibration="",
        outliers=np.zeros(0, np.int64),
        outlier_cut=1.0,
        k=3,
        n=n,
        has_hashes=True,
    )
    text = " ".join(h.text for h in Audit(ReportOptions(), 0).headlines(f, Where("m", "l", "a", samples)))
    assert "1 likely label error (" in text and "1 image exactly repeats another (1 group of" in text, text
    assert "1 pair of near-duplicate images" in text, text
