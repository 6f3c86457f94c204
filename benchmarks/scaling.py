"""Scaling and end-to-end benchmark: full reports of Fashion-MNIST at N = 1,000 / 10,000 / 70,000.

Each build runs in a fresh subprocess (its own peak RSS, a fresh cache, so a true first build) with
3 layers of the packaged EfficientNet-Lite0 at 96 px and PCA + t-SNE + UMAP. Per stage it records
wall time and peak RSS (from run.json). At 10,000 images (``--e2e``) the same script then times the
unavoidable parts raw on the same arrays - a bare eager forward pass over pre-decoded batches, raw
openTSNE and raw umap-learn per layer - and prints the end-to-end ratio (target <= 1.3).

    python benchmarks/scaling.py                      # 1k, 10k, 70k + the end-to-end ratio
    python benchmarks/scaling.py --sizes 1000 --no-e2e
Writes benchmarks/results/scaling.json and docs/scaling.png (log-log, seconds and peak RSS per stage).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/run.py: one data path and one machine description for both result files
from run import FASHION, machine

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["blocks.2", "blocks.4", "global_pool"]

SPEC = """
title: scaling {n}
seed: 0
dataset:
  kind: idx
  images: [{f}/train-images-idx3-ubyte.gz, {f}/t10k-images-idx3-ubyte.gz]
  labels: [{f}/train-labels-idx1-ubyte.gz, {f}/t10k-labels-idx1-ubyte.gz]
  class_names: [T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot]
  name: Fashion-MNIST
  limit: {n}
models:
  - name: effnet
    timm: tf_efficientnet_lite0
    weights: efficientnet_lite0
    input_size: 96
    crop_pct: 1.0
    batch_size: 128
    layers: [blocks.2, blocks.4, {{name: global_pool, reshape: mean}}]
reducers: [{{pca: {{n_components: 10}}}}, {{tsne: {{perplexity: 30}}}}, {{umap: {{n_neighbors: 15}}}}]
report: {{mosaic_cap: 1500}}
output: {{dir: {out}, max_html_mb: 10}}
cache_dir: {cache}
"""

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from reportgen.pipeline import ProcessHooks, build
from reportgen.spec import load_spec
hooks = ProcessHooks(reset_peaks=True, trim_memory=True)  # its own process, as the CLI
res = build(load_spec(sys.argv[1]), progress=False, hooks=hooks)
wall = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
run = json.loads((res.output_dir / "run.json").read_text())
stats = res.stats
print("RESULT " + json.dumps({"wall_s": wall, "timings_s": dict(stats.timings), "peak_rss_mb": dict(stats.peak_rss_mb),
                              "final_hwm_mb": hwm, "samples": len(res.ids), "html_bytes": run.get("html_bytes")}))
"""


def _child_build(spec: Path, what: str) -> dict:
    """Build ``spec`` in a fresh process (CHILD): its RESULT line, and the process's wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed:\n{p.stderr[-3000:]}")
    r = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
    r["process_s"] = time.perf_counter() - t0
    return r


def build_once(n: int, tmp: Path) -> dict:
    out, cache = tmp / f"out{n}", tmp / f"cache{n}"
    spec = tmp / f"spec{n}.yaml"
    spec.write_text(SPEC.format(n=n, f=FASHION, out=out, cache=cache))
    r = _child_build(spec, f"build of {n}")
    html = out / "report.html"
    r["html_bytes"] = html.stat().st_size if html.exists() else r.get("html_bytes")
    r["spec"] = str(spec)
    r["out"] = str(out)
    return r


def raw_parts(spec_path: str) -> dict:
    """The unavoidable parts, raw, on the same arrays as the build: bare forward, openTSNE, umap-learn."""
    import torch
    import umap
    from openTSNE import TSNE

    from reportgen.compute.pca import fit_pca
    from reportgen.images import preprocess_image
    from reportgen.models import load_model
    from reportgen.pipeline import extract_embeddings
    from reportgen.spec import load_spec

    spec = load_spec(spec_path)
    ds, sel, runs = extract_embeddings(spec, progress=False)  # cached by the build: no forward pass here
    loaded = load_model(spec.models[0])
    model = loaded.module.eval()
    images = [ds.read(int(i)) for i in sel.indices]
    arr = np.stack([preprocess_image(im, loaded.preprocess) for im in images])
    batches = [torch.from_numpy(arr[s : s + 128]) for s in range(0, len(arr), 128)]  # pre-decoded, as the baseline asks
    out = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            model(b)
    out["bare forward"] = time.perf_counter() - t0
    out["openTSNE defaults"] = out["umap-learn defaults"] = 0.0
    for layer in LAYERS:
        x = np.asarray(runs[0].embeddings.layers[layer], np.float32)
        pca50 = fit_pca(x, 50).scores
        t0 = time.perf_counter()
        TSNE(n_jobs=os.cpu_count(), random_state=0).fit(pca50)
        out["openTSNE defaults"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        umap.UMAP(random_state=0).fit_transform(x)
        out["umap-learn defaults"] += time.perf_counter() - t0
    return out


PRECOMPUTED_TITLE = (
    "reportgen on precomputed embeddings (Fashion-MNIST global_pool tiled, 1,280-d; PCA + t-SNE + UMAP), 2 CPU cores"
)


def figure(
    results: dict,
    path: Path,
    *,
    title: str = "reportgen on Fashion-MNIST (EfficientNet-Lite0, 96 px, 3 layers, PCA + t-SNE + UMAP), 2 CPU cores",
    budget: int = 4096,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in results)
    last = results[str(ns[-1])]
    palette = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    # the stages that cost most at the largest N, one colour each (more lines would be unreadable)
    stages = sorted({s for r in results.values() for s in r["timings_s"]}, key=lambda s: -last["timings_s"].get(s, 0))[
        : len(palette)
    ]
    colours = dict(zip(stages, palette))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
    for s in stages:  # one colour per stage in both panels; times under 0.05 s drawn at 0.05
        t = [results[str(n)]["timings_s"].get(s) for n in ns]
        if all(v is not None for v in t):
            a.plot(ns, [max(v, 0.05) for v in t], marker="o", color=colours[s], label=s)
        m = [results[str(n)]["peak_rss_mb"].get(s) for n in ns]
        if all(v is not None for v in m):
            b.plot(ns, m, marker="o", color=colours[s], label=s)
    a.plot(ns, [results[str(n)]["wall_s"] for n in ns], "k--", marker="s", label="whole build")
    b.plot(
        ns, [max(results[str(n)]["peak_rss_mb"].values()) for n in ns], "k--", marker="s", label="whole build (peak)"
    )
    b.axhline(budget, color="red", lw=0.8, ls=":", label=f"{budget // 1024} GiB budget")
    a.plot(
        ns,
        [ns[0] and results[str(ns[0])]["wall_s"] * n / ns[0] for n in ns],
        color="grey",
        lw=0.7,
        ls=":",
        label="linear in N",
    )
    for ax, panel, unit in ((a, "wall time per stage", "seconds"), (b, "peak RSS during each stage (process)", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("images (N)")
        ax.set_ylabel(unit)
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=7, loc="upper left")
    b.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- a million precomputed embeddings

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

PRECOMPUTED_SPEC = """
title: precomputed {n}
seed: 0
dataset: {{kind: embeddings, vectors: {data}/vectors.npy, images: {data}/images.npy, metadata: {data}/meta.tsv,
          name: Fashion-MNIST x{reps}, limit: {n}, sample: first}}
reducers: [{{pca: {{n_components: 10}}}}, {{tsne: {{perplexity: 30}}}}, {{umap: {{n_neighbors: 15}}}}]
report: {{mosaic_cap: 1500, axes: [[Shirt, T-shirt/top]], neighbour_index: {index}}}
output: {{dir: {out}, max_html_mb: 10}}
cache_dir: {cache}
"""


def prepare_precomputed(data: Path, n: int) -> Path:
    """Fashion-MNIST's 70,000 global_pool embeddings (EfficientNet-Lite0, 96 px) tiled to n rows with
    seeded noise (5 % of each dimension's std), their labels and images kept: vectors.npy (float32,
    written in chunks), images.npy (uint8 28x28), meta.tsv. Made once, reused."""
    if (data / "vectors.npy").exists() and len(np.load(data / "vectors.npy", mmap_mode="r")) >= n:
        return data
    from numpy.lib.format import open_memmap

    from reportgen.pipeline import extract_embeddings
    from reportgen.spec import loads_spec

    data.mkdir(parents=True, exist_ok=True)
    spec = loads_spec(
        SPEC.format(n=70_000, f=FASHION, out=data / "unused", cache=data / "cache").replace(
            "layers: [blocks.2, blocks.4, {name: global_pool, reshape: mean}]",
            "layers: [{name: global_pool, reshape: mean}]",
        )
    )
    ds, sel, runs = extract_embeddings(spec, progress=False)
    base = np.asarray(runs[0].embeddings.layers["global_pool"], np.float32)
    labels = runs[0].embeddings.labels
    images = np.stack([ds.read(int(i))[:, :, 0] for i in sel.indices])
    std = base.std(0) * 0.05
    vec = open_memmap(data / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, base.shape[1]))
    img = open_memmap(data / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(0)
    for s in range(0, n, 50_000):
        rows = np.arange(s, min(s + 50_000, n)) % len(base)
        vec[s : s + len(rows)] = (
            base[rows]
            + (rng.normal(size=(len(rows), base.shape[1])) * std).astype(np.float32)
            * (np.arange(s, s + len(rows)) >= len(base))[:, None]
        )
        img[s : s + len(rows)] = images[rows]
    vec.flush()
    img.flush()
    del vec, img
    with open(data / "meta.tsv", "w") as f:
        f.write("label\tsource_row\n")
        for i in range(n):
            f.write(f"{CLASSES[labels[i % len(base)]]}\t{i % len(base)}\n")
    return data


def build_precomputed(n: int, data: Path, tmp: Path, index: str = "auto") -> dict:
    out, cache = tmp / f"pout{n}-{index}", tmp / f"pcache{n}-{index}"
    spec = tmp / f"pspec{n}-{index}.yaml"
    spec.write_text(
        PRECOMPUTED_SPEC.format(
            n=n,
            data=data,
            out=out,
            cache=cache,
            index=index,
            reps=round(len(np.load(data / "vectors.npy", mmap_mode="r")) / 70_000),
        )
    )
    r = _child_build(spec, f"precomputed build of {n}")
    summary = json.loads((out / "summary.json").read_text())
    layer = summary["models"][0]["layers"][0]
    r["metrics"] = {k: v for k, v in layer["metrics"].items() if k != "maps"}
    r["maps"] = layer["maps"]
    r["html_bytes"] = (out / "report.html").stat().st_size
    shutil.rmtree(cache, ignore_errors=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 70_000])
    ap.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the raw parts at 10,000 images")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/scaling.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs/scaling.png")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --json")
    ap.add_argument(
        "--precomputed",
        action="store_true",
        help="a million precomputed embeddings: builds at 10k / 100k / 1M (--sizes) from a tiled .npy",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "reportgen-scale-data",
        help="where the tiled input is made once",
    )
    ap.add_argument(
        "--compare-graph",
        action="store_true",
        help="at 70,000 precomputed rows: the approximate vs the exact neighbour graph, same run",
    )
    args = ap.parse_args()
    if args.precomputed or args.compare_graph:
        return main_precomputed(args)
    if args.plot_only:
        data = json.loads(args.json.read_text())
        if "precomputed" in args.json.name:
            figure(data["builds"], args.figure, title=PRECOMPUTED_TITLE, budget=8192)
        else:
            figure(data["builds"], args.figure)
        print(f"wrote {args.figure}")
        return 0
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        print(f"skip: Fashion-MNIST not found in {FASHION} (apt-get install dataset-fashion-mnist)")
        return 0
    results, e2e = {}, None
    with tempfile.TemporaryDirectory(prefix="reportgen-scaling-") as tmp:
        for n in args.sizes:
            r = build_once(n, Path(tmp))
            results[str(n)] = r
            top = sorted(r["timings_s"].items(), key=lambda kv: -kv[1])[:6]
            print(
                (
                    f"N={n:>6}: {r['wall_s']:7.1f} s, peak RSS {max(r['peak_rss_mb'].values()):6.0f} MB, HTML "
                    f"{r['html_bytes'] / 1e6:.1f} MB; "
                )
                + ", ".join(f"{k} {v:.1f}" for k, v in top),
                flush=True,
            )
            if n == 10_000 and args.e2e:
                raw = raw_parts(r["spec"])
                total = sum(raw.values())
                e2e = {
                    "build_s": r["wall_s"],
                    "raw_s": raw,
                    "raw_total_s": total,
                    "ratio": r["wall_s"] / total,
                    "target": 1.3,
                }
                print(
                    f"end to end at 10,000: build {r['wall_s']:.1f} s vs raw parts {total:.1f} s "
                    f"({', '.join(f'{k} {v:.1f}' for k, v in raw.items())}): ratio {e2e['ratio']:.3f} (target <= 1.3)",
                    flush=True,
                )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"machine": {**machine(), "date": time.strftime("%Y-%m-%d")}, "builds": results, "end_to_end": e2e},
            indent=1,
        )
    )
    if len(results) > 1:
        figure(results, args.figure)
    print(f"wrote {args.json}" + (f" and {args.figure}" if len(results) > 1 else ""))
    return 0


def main_precomputed(args) -> int:
    sizes = args.sizes if args.sizes != [1000, 10_000, 70_000] else [10_000, 100_000, 1_000_000]
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        print(f"skip: Fashion-MNIST not found in {FASHION} (apt-get install dataset-fashion-mnist)")
        return 0
    data = prepare_precomputed(args.data, max(sizes + [70_000]))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="reportgen-scaling-") as tmp:
        if args.compare_graph:
            for index in ("exact", "auto"):
                r = build_precomputed(70_000, data, Path(tmp), index)
                results[f"70000-{index}"] = r
                print(
                    f"70,000 rows, neighbour_index {index}: {r['wall_s']:.1f} s, graph "
                    f"{r['timings_s'].get('neighbours', 0):.1f} s, recall "
                    f"{r['metrics'].get('neighbour_recall')}, trustworthiness tsne "
                    f"{r['metrics'].get('trustworthiness_tsne')}, umap "
                    f"{r['metrics'].get('trustworthiness_umap')}",
                    flush=True,
                )
        else:
            for n in sizes:
                r = build_precomputed(n, data, Path(tmp))
                results[str(n)] = r
                top = sorted(r["timings_s"].items(), key=lambda kv: -kv[1])[:7]
                print(
                    f"N={n:>8}: {r['wall_s']:7.1f} s, peak RSS {max(r['peak_rss_mb'].values()):6.0f} MB, HTML "
                    f"{r['html_bytes'] / 1e6:.1f} MB, recall "
                    f"{r['metrics'].get('neighbour_recall')}; " + ", ".join(f"{k} {v:.1f}" for k, v in top),
                    flush=True,
                )
    out = args.json.with_name("scaling-precomputed.json" if not args.compare_graph else "graph-70k.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": {**machine(), "date": time.strftime("%Y-%m-%d")}, "builds": results}, indent=1)
    )
    if not args.compare_graph and len(results) > 1:
        figure(results, args.figure.with_name("scaling-1m.png"), title=PRECOMPUTED_TITLE, budget=8192)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
