"""The interactive layer's cost: bytes it adds to the report and the time from load to an interactive map.

For each N (Fashion-MNIST, EfficientNet-Lite0 at 96 px, layers blocks.2 / blocks.4 / global_pool,
PCA + t-SNE + UMAP: the scaling benchmark's spec) the report is built once with
``report.interactive: true`` and rebuilt from the same cache with ``false`` (nothing recomputed but
the render), both at full size (``max_html_mb`` high enough that no reduction step runs). Bytes
added = the difference of the two HTML files; the script and the data island are counted apart.

Time to interactive: the report opened in headless Chromium (Playwright, Debian's chromium) from
disk, ``repeat`` times; the script marks ``<html data-rg-ready>`` with ``performance.now()`` (ms
since navigation start) when every map is drawn and the thumbnail atlas decoded. The baseline, timed
in the same run: the load event of the same page with JavaScript off (what the page costs without
the interactive layer).

    python benchmarks/interactive.py --sizes 1000 10000 70000 --cache /tmp/ibench-cache
Writes benchmarks/results/interactive.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import FASHION, machine
from scaling import SPEC

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _build(n: int, tmp: Path, cache: Path, interactive: bool) -> dict:
    out = tmp / f"out{n}-{'js' if interactive else 'static'}"
    spec = tmp / f"spec{n}-{interactive}.yaml"
    text = SPEC.format(n=n, f=FASHION, out=out, cache=cache).replace(
        "output: {dir: " + str(out) + ", max_html_mb: 10}", "output: {dir: " + str(out) + ", max_html_mb: 200}"
    )
    text = text.replace(
        "report: {mosaic_cap: 1500}", f"report: {{mosaic_cap: 1500, interactive: {str(interactive).lower()}}}"
    )
    spec.write_text(text)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "reportgen", "-q", "build", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    if p.returncode != 0:
        raise SystemExit(f"build of {n} failed:\n{p.stderr[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    return {"out": out, "build_s": time.perf_counter() - t0, "run": run}


def _browser_times(html: Path, repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    ready, static_load, loads = [], [], []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for _ in range(repeat):
            for js in (False, True):  # interleaved: drifts in machine load hit both alike
                ctx = b.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=js)
                page = ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(html.as_uri(), wait_until="load", timeout=120_000)
                if js:
                    page.wait_for_selector("html[data-rg-ready]", timeout=120_000)
                    ready.append(float(page.get_attribute("html", "data-rg-ready")))
                    loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                    if errors:
                        raise SystemExit(f"script errors: {errors}")
                else:
                    static_load.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                ctx.close()
        b.close()
    return {
        "ready_ms": statistics.median(ready),
        "load_ms_with_js": statistics.median(loads),
        "load_ms_without_js": statistics.median(static_load),
        "repeats": repeat,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 70000])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/reportgen-ibench-cache"))
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/reportgen-ibench"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "interactive.json")
    args = ap.parse_args()
    args.tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"machine: {machine()}")
    for n in args.sizes:
        live = _build(n, args.tmp, args.cache, True)
        static = _build(n, args.tmp, args.cache, False)
        sb = live["run"]["section_bytes"]
        html = live["out"] / "report.html"
        summary = json.loads((live["out"] / "summary.json").read_text())
        island = json.loads(
            html.read_text().split('<script type="application/json" id="rg-data">', 1)[1].split("</script>", 1)[0]
        )
        script = (ROOT / "templates" / "report.js").stat().st_size
        times = _browser_times(html, args.repeat)
        row = {
            "n": n,
            "html_bytes": live["run"]["html_bytes"],
            "html_bytes_static": static["run"]["html_bytes"],
            "added_bytes": live["run"]["html_bytes"] - static["run"]["html_bytes"],
            "interactive_bytes": sb.get("interactive"),
            "script_bytes": script,
            "atlas_bytes": len(island["atlas"]["uri"]) if island.get("atlas") else 0,
            "points": len(island["ids"]),
            "cards": len(summary["cards"]),
            "reductions": summary["html"]["reductions"],
            "build_s": live["build_s"],
            "rebuild_s": static["build_s"],
            **times,
            "ratio_ready_vs_static_load": times["ready_ms"] / times["load_ms_without_js"],
        }
        rows.append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
