"""The report in a real browser: Playwright driving Debian's Chromium (no browser download).

One build of Fashion-MNIST images behind a CSV manifest whose class names, file names and metadata
are hostile (they try to close the script, add handlers, open dialogs), with labels flipped on
purpose so the audit has findings. With JavaScript on: hovering a known sample shows its thumbnail
and file name, the search finds a file, a finding's sample opens its card, layers switch in place,
no console error and no dialog. With JavaScript off: the maps' areas exist and lead to cards, every
in-page link resolves, every layer is there. In print: every <details> open.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EFFNET, make_spec
from tests.pages import check_page

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it as root)", allow_module_level=True)

FASHION = Path("/usr/share/datasets/fashion-mnist")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: class names that try to break out of the page (or of the data island)
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    "a&b \"q\" 'q' 😀 עברית",
    "Sneaker",
]
NEEDLE = "needle <b>x"  # a file name cannot hold a slash


def _images(n: int) -> tuple[np.ndarray, np.ndarray]:
    if (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        import gzip

        from reportgen.datasets.idx import parse_idx

        def read(name: str) -> np.ndarray:
            return parse_idx(gzip.decompress((FASHION / name).read_bytes()), source=name)

        x, y = read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")
        keep = np.flatnonzero(np.isin(y, [0, 1, 5, 7]))[:n]  # T-shirt, Trouser, Sandal, Sneaker
        return x[keep], np.searchsorted([0, 1, 5, 7], y[keep])
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(d.target < 4)[:n]
    return (d.images[keep] * 16).clip(0, 255).astype(np.uint8), d.target[keep]


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory) -> Path:
    from PIL import Image

    from reportgen.pipeline import build

    tmp = tmp_path_factory.mktemp("browser")
    x, y = _images(600)
    rng = np.random.default_rng(0)
    flips = rng.choice(len(y), 20, replace=False)
    y = y.copy()
    y[flips] = (y[flips] + 1) % 4
    (tmp / "img").mkdir()
    rows = []
    for i, (im, label) in enumerate(zip(x, y)):
        name = f"{NEEDLE}.png" if i == 17 else f"<svg onload=alert({i})>'{i}\".png"
        Image.fromarray(im).save(tmp / "img" / name)
        rows.append({"path": f"img/{name}", "label": HOSTILE[int(label)], "note": f"</script><b>{i % 3}</b>"})
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "note"])
        w.writeheader()
        w.writerows(rows)
    spec = make_spec(
        {
            "title": "browser <test>",
            "seed": 0,
            "dataset": {
                "kind": "csv",
                "path": str(tmp / "manifest.csv"),
                "path_column": "path",
                "label_column": "label",
            },
            "models": [
                {**EFFNET, "input_size": 32, "layers": ["blocks.4", {"name": "global_pool", "reshape": "mean"}]}
            ],
            "reducers": [{"pca": {"n_components": 6}}, {"tsne": {"perplexity": 20, "n_iter": 250}}],
            "report": {"gallery_size": 4, "gallery_components": 3, "linked_points": 120},
            "output": {"dir": str(tmp / "out")},
            "cache_dir": str(tmp / "cache"),
        }
    )
    build(spec, progress=False)
    return tmp / "out"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watched:
    """A page and what went wrong on it: console errors, uncaught exceptions, dialogs."""

    def __init__(self, browser, url: str, *, javascript: bool = True, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900}, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on(
            "console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.goto(url)
        if javascript:
            self.page.wait_for_selector("html[data-rg-ready]", timeout=30_000)

    def _dialog(self, d) -> None:
        self.problems.append(f"dialog: {d.message}")
        d.dismiss()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def live(browser, page_dir):
    w = Watched(browser, (page_dir / "report.html").as_uri())
    yield w
    w.close()
    assert not w.problems, w.problems


def _summary(page_dir: Path) -> dict:
    return json.loads((page_dir / "summary.json").read_text())


def test_the_page_is_well_formed(page_dir):
    p = check_page((page_dir / "report.html").read_text())
    island = p.island  # the names are there as data, never as markup (check_page: no "<" in the island's text)
    assert sorted(c["name"] for c in island["classes"]) == sorted(HOSTILE) and f"img/{NEEDLE}.png" in island["ids"]


def test_hover_shows_thumbnail_and_file_name(live):
    page = live.page
    fig = page.locator('figure.imap[data-map="tsne"]').first
    fig.scroll_into_view_if_needed()
    pos = page.evaluate("([f, id]) => reportgen.locate(f, id)", [fig.element_handle(), f"img/{NEEDLE}.png"])
    assert pos is not None, "the known sample is not among the interactive points"
    page.mouse.move(*pos)
    tip = fig.locator('[role="tooltip"]')
    tip.wait_for(state="visible")
    assert NEEDLE in tip.inner_text()
    img = tip.locator("img")
    assert img.count() == 1 and img.get_attribute("src").startswith("data:image/")
    assert page.evaluate("i => i.naturalWidth", img.element_handle()) > 0


def test_search_finds_a_file(live):
    page = live.page
    page.fill("#rg-search", "needle")
    results = page.locator(".rg-results a")
    results.first.wait_for()
    assert results.count() == 1 and NEEDLE in results.first.inner_text()
    results.first.click()
    card = page.locator(".card:target")
    card.wait_for(state="visible")
    assert NEEDLE in card.inner_text()


def test_a_point_without_a_card_gets_one_made_in_the_page(live):
    page = live.page
    island = json.loads(page.locator("#rg-data").text_content())
    carded = {i for i, _ in island["cards"]}
    loose = next((s for i, s in enumerate(island["ids"]) if i not in carded), None)
    assert loose is not None, "every interactive point has a card: nothing to make"
    page.evaluate("id => reportgen.open(id)", loose)
    card = page.locator("#rg-dyn")
    card.wait_for(state="visible")
    text = card.inner_text()
    assert loose in text and "kNN prediction" in text
    assert page.evaluate("location.hash") == "#rg-dyn"


def test_a_finding_leads_to_its_sample_card(live, page_dir):
    page = live.page
    labels = [f for f in _summary(page_dir)["findings"] if "label_issues" in f["id"]]
    assert labels and labels[0]["samples"], "the planted label errors gave no finding"
    first = labels[0]["samples"][0]
    assert first["card"].startswith("#s-")
    page.locator(f'.findings a[href="{first["card"]}"]').first.click()
    card = page.locator(f'article[id="{first["card"][1:]}"]')
    card.wait_for(state="visible")
    text = card.inner_text()
    assert first["id"] in text and "likely label error" in text
    box = card.bounding_box()
    assert box and box["y"] >= 0 and box["y"] < 900  # on screen, over the page, not at its end
    page.keyboard.press("Escape")
    card.wait_for(state="hidden")


def test_clicking_a_flagged_point_opens_its_card(live, page_dir):
    page = live.page
    flagged = [s["id"] for f in _summary(page_dir)["findings"] if "label_issues" in f["id"] for s in f["samples"]]
    page.locator('.rg-tabs [role="tab"]').last.click()  # the audit layer (the deepest)
    fig = page.locator('figure.imap[data-map="pca"]').last
    fig.scroll_into_view_if_needed()
    for sample in flagged:
        pos = page.evaluate("([f, id]) => reportgen.locate(f, id)", [fig.element_handle(), sample])
        page.mouse.move(*pos)
        if sample in fig.locator('[role="tooltip"]').inner_text():
            page.mouse.down()
            page.mouse.up()
            card = page.locator(".card:target")
            card.wait_for(state="visible")
            assert sample in card.inner_text()
            return
    pytest.fail("no flagged sample could be hovered on its own (all overlapped)")


def test_hostile_names_stay_text(live):
    page = live.page
    legend = page.locator(".rg-legend").first.inner_text()
    assert HOSTILE[0] in legend and HOSTILE[1] in legend  # shown as text: nothing ran, no dialog
    assert page.evaluate("document.querySelectorAll('img[src=x], script:not([type])').length") == 1  # the report's own


def test_layers_switch_in_place(live):
    page = live.page
    tabs = page.locator('.rg-tabs [role="tab"]')
    assert tabs.count() == 2
    panels = page.locator("#layers > section")
    assert [panels.nth(i).is_visible() for i in range(2)] == [True, False]
    tabs.nth(1).click()
    assert [panels.nth(i).is_visible() for i in range(2)] == [False, True]
    # a deep link into a hidden layer shows it
    first = panels.nth(0).get_attribute("id")
    page.evaluate(f"location.hash = {json.dumps(first + '-maps')}")
    page.wait_for_function(f"!document.getElementById({json.dumps(first)}).hidden")


def test_a_deep_link_lands_below_the_sticky_bars(browser, page_dir):
    """A link into the page (mailed to a reviewer, or followed inside it) shows its heading below
    the search bar and the layer tabs, which stick to the top of the window, not under them."""
    url = (page_dir / "report.html").as_uri()
    first = Watched(browser, url)
    ids = first.page.evaluate("[...document.querySelectorAll('#layers > section')].map(s => s.id)")
    first.close()
    w = Watched(browser, f"{url}#{ids[1]}-maps")  # in the layer a fresh page hides

    def clear_of_the_bars(target: str) -> tuple[float, float]:
        w.page.wait_for_function(f"!document.getElementById({json.dumps(ids[1])}).hidden")
        top = w.page.evaluate(f"document.getElementById({json.dumps(target)}).getBoundingClientRect().top")
        bars = w.page.evaluate(
            "Math.max(...[...document.querySelectorAll('.rg-bar, .rg-tabs')]"
            ".map(e => e.getBoundingClientRect().bottom))"
        )
        return top, bars

    top, bars = clear_of_the_bars(f"{ids[1]}-maps")
    assert bars > 40 and bars <= top < 900, (top, bars)
    w.page.evaluate(f"location.hash = {json.dumps(ids[1] + '-audit')}")
    w.page.wait_for_timeout(200)
    top, bars = clear_of_the_bars(f"{ids[1]}-audit")
    assert bars <= top < 900, (top, bars)
    assert not w.problems, w.problems
    w.close()


def test_colour_by_finding_and_metadata(live):
    page = live.page
    page.locator('.rg-tabs [role="tab"]').last.click()
    fig = page.locator('figure.imap[data-map="tsne"]').last
    fig.scroll_into_view_if_needed()
    options = fig.locator("select option").all_inner_texts()
    assert any("finding" in o for o in options) and any("note" in o for o in options)
    fig.locator("select").select_option(label="colour: finding")
    assert "likely label error" in fig.locator(".rg-legend").inner_text()


def test_without_javascript_maps_link_to_cards(browser, page_dir):
    w = Watched(browser, (page_dir / "report.html").as_uri(), javascript=False)
    page = w.page
    try:
        assert page.locator("script:not([type])").count() == 1 and page.locator(".rg-bar").count() == 0
        areas = page.locator("map area")
        assert areas.count() > 0
        first = areas.first
        assert first.get_attribute("title") and first.get_attribute("href").startswith("#s-")
        # every in-page link resolves in the browser's DOM too
        dangling = page.evaluate(
            '[...document.querySelectorAll(\'a[href^="#"], area[href^="#"]\')]'
            ".map(a => a.getAttribute('href').slice(1)).filter(id => !document.getElementById(id))"
        )
        assert not dangling, dangling[:5]
        # every layer is there, in order, and an area's card opens without a script
        assert all(s.is_visible() for s in page.locator("#layers > section").all())
        href = first.get_attribute("href")
        page.evaluate(f"location.hash = {json.dumps(href)}")
        card = page.locator(f'article[id="{href[1:]}"]')
        card.wait_for(state="visible")
        assert first.get_attribute("title").split(" · ")[-1] in card.inner_text()
    finally:
        w.close()
    assert not w.problems, w.problems


def test_print_opens_every_details(browser, page_dir):
    w = Watched(browser, (page_dir / "report.html").as_uri())
    try:
        page = w.page
        closed = page.locator("details:not([open])")
        assert closed.count() > 0
        page.emulate_media(media="print")
        inner = page.locator("details:not([open]) dl, details:not([open]) table").first
        assert inner.is_visible()
        assert all(s.is_visible() for s in page.locator("#layers > section").all())
    finally:
        w.close()
