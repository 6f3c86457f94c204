"""Planted problems: each detector's recall and precision on Fashion-MNIST with the packaged
EfficientNet-Lite0, and what the audit, slices and diff cost.

    python benchmarks/findings.py            # about 15 minutes on 2 cores
    python benchmarks/findings.py --n 2000   # a quicker, smaller run

Plants, in one data set of n test images (at the model's own 224 px by default; ``--px``; layer global_pool):
- 4 % of labels flipped to a random other class  -> "likely label errors";
- 1 % of images copied exactly (new rows)         -> exact duplicates;
- 1 % near-copies (JPEG 80, up to 4 % brighter or darker, 1 px shift: a random mix, never none) -> near duplicates;
- a second data set ("test") of n/5 images, 10 % of them copied from the first (half exact, half
  edited)                                           -> leakage;
- 4 % of images (any class) corrupted by noise      -> a slice (a corrupted batch);
- a checkpoint whose blocks.5 weights are scrambled -> the diff (neighbourhoods of layers after it).
Writes benchmarks/results/findings.json; the table goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from run import FASHION, ROOT, machine

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def edit(img: np.ndarray, rng) -> np.ndarray:
    from PIL import Image

    a = img.astype(np.float32)
    if rng.random() < 0.7:
        a = a * (1 + rng.uniform(-0.04, 0.04))
    if rng.random() < 0.5:
        a = np.roll(a, int(rng.choice([-1, 1])), axis=int(rng.integers(0, 2)))
    out = np.clip(a, 0, 255).astype(np.uint8)
    if rng.random() < 0.7 or np.array_equal(out, img):  # always some edit: an unedited copy is an exact duplicate
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=80)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return out


def pr(found: set, truth: set) -> dict:
    tp = len(found & truth)
    return {
        "found": len(found),
        "planted": len(truth),
        "true_positives": tp,
        "precision": tp / len(found) if found else None,
        "recall": tp / len(truth) if truth else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument(
        "--px",
        type=int,
        default=224,
        help="input size (224: EfficientNet-Lite0's own; 96 is faster and its features weaker)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "findings.json")
    args = ap.parse_args()
    if not (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        print(f"skip: Fashion-MNIST not found in {FASHION}")
        return 0
    from reportgen.datasets import load_dataset
    from reportgen.datasets.idx import IdxDataset
    from reportgen.pipeline import build
    from reportgen.spec import loads_spec

    ds = load_dataset(
        IdxDataset(
            kind="idx", images=FASHION / "train-images-idx3-ubyte.gz", labels=FASHION / "train-labels-idx1-ubyte.gz"
        )
    )
    rng = np.random.default_rng(0)
    n = args.n
    base = np.sort(rng.choice(len(ds), n + n // 5, replace=False))
    images = np.stack([ds.read(int(i))[:, :, 0] for i in base])
    labels = ds.labels[base].copy()
    a_img, a_lab = images[:n].copy(), labels[:n].copy()
    t_img, t_lab = images[n:].copy(), labels[n:].copy()
    # label flips
    flips = np.sort(rng.choice(n, int(0.04 * n), replace=False))
    a_lab[flips] = (a_lab[flips] + rng.integers(1, 10, len(flips))) % 10
    # a corrupted batch (a slice): Gaussian noise on 4 % of the images, among rows not flipped
    noisy = np.sort(rng.choice(np.setdiff1d(np.arange(n), flips), n // 25, replace=False))
    a_img[noisy] = np.clip(a_img[noisy].astype(np.float32) + rng.normal(0, 60, a_img[noisy].shape), 0, 255).astype(
        np.uint8
    )
    # exact and near copies appended as new rows
    src_exact = rng.choice(np.setdiff1d(np.arange(n), np.r_[flips, noisy]), n // 100, replace=False)
    src_near = rng.choice(np.setdiff1d(np.arange(n), np.r_[flips, noisy, src_exact]), n // 100, replace=False)
    near_imgs = np.stack([edit(a_img[i], rng) for i in src_near])
    all_img = np.concatenate([a_img, a_img[src_exact], near_imgs])
    all_lab = np.concatenate([a_lab, a_lab[src_exact], a_lab[src_near]])
    exact_pairs = {(int(i), n + j) for j, i in enumerate(src_exact)}
    # Fashion-MNIST holds a few identical images of its own: pairs among the originals whose pixels
    # are equal count as true duplicates too (checked here on the pixels, not by the detector)
    keys = {}
    for i in range(n):
        keys.setdefault(a_img[i].tobytes(), []).append(i)
    natural_exact = {(g[0], b) for g in keys.values() if len(g) > 1 for b in g[1:]}
    near_pairs = {(int(i), n + len(src_exact) + j) for j, i in enumerate(src_near)}
    # leakage: 10 % of the test set copied from the first set (half exact, half edited)
    leak_rows = rng.choice(len(t_img), len(t_img) // 10, replace=False)
    leak_src = rng.choice(n, len(leak_rows), replace=False)
    for k, (r, s) in enumerate(zip(leak_rows, leak_src)):
        t_img[r] = a_img[s] if k % 2 == 0 else edit(a_img[s], rng)
        t_lab[r] = a_lab[s]
    results: dict = {"n": n, "px": args.px, "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "train.npz", images=all_img, labels=all_lab)
        np.savez(tmp / "test.npz", images=t_img, labels=t_lab)
        model = (
            "{name: effnet, timm: tf_efficientnet_lite0, weights: efficientnet_lite0, input_size: "
            f"{args.px}, crop_pct: 1.0, batch_size: 128, "
            "layers: [blocks.4, blocks.6, {name: global_pool, reshape: mean}]}"
        )
        spec = f"""
title: planted problems
seed: 0
datasets:
  - {{kind: npz, path: {tmp}/train.npz, name: train, class_names: {json.dumps(CLASSES)}}}
  - {{kind: npz, path: {tmp}/test.npz, name: test, class_names: {json.dumps(CLASSES)}}}
models: [{model}]
reducers: [pca, {{tsne: {{perplexity: 30}}}}]
output: {{dir: {tmp}/out}}
cache_dir: {tmp}/cache
"""
        t0 = time.perf_counter()
        res = build(loads_spec(spec), progress=False)
        wall = time.perf_counter() - t0
        s = json.loads((tmp / "out" / "summary.json").read_text())
        layer = next(l for l in s["models"][0]["layers"] if l["layer"] == "global_pool")
        audit = layer["audit"]
        row = {i: int(i.rsplit("-", 1)[1]) for i in res.ids}
        results["label_issues"] = pr({row[x["id"]] for x in audit["label_issues"]}, set(flips.tolist()))
        groups = [sorted(row[i] for i in g) for g in audit["duplicate_groups"]]
        found_exact = {(g[0], b) for g in groups for b in g[1:]}
        results["exact_duplicates"] = pr(found_exact, exact_pairs | natural_exact)
        results["exact_duplicates"]["of_them_in_fashion_mnist_itself"] = len(natural_exact)
        found_near = {tuple(sorted((row[p["a"]], row[p["b"]]))) for p in audit["near_duplicates"]}
        results["near_duplicates"] = pr(found_near, near_pairs)
        results["near_duplicates"]["pairs_among_originals"] = sorted(p for p in found_near if p[1] < n)
        results["near_threshold"] = audit["near_threshold"]
        leak = s["leakage"][0]
        test_row = {f"test-{i}": i for i in range(len(t_img))}
        results["leakage"] = pr({test_row[p["id"]] for p in leak["pairs"]}, set(int(r) for r in leak_rows))
        lr = next(l for l in res.report.models[0].layers if l.layer == "global_pool")
        sl = lr.findings.get("slices")
        if sl is not None:
            planted = set(noisy.tolist())
            best = max(
                sl.slices, key=lambda z: len(planted & set(z.rows.tolist())) / len(planted | set(z.rows.tolist()))
            )
            jac = len(planted & set(best.rows.tolist())) / len(planted | set(best.rows.tolist()))
            results["slice"] = {
                "planted": len(planted),
                "best_jaccard": jac,
                "its_rank": best.id,
                "its_size": int(len(best.rows)),
                "its_knn_accuracy": best.knn_accuracy,
                "overall_accuracy": sl.overall,
                "slices": len(sl.slices),
                "worst": {"size": int(len(sl.slices[0].rows)), "knn_accuracy": sl.slices[0].knn_accuracy},
            }
        timings = res.stats.timings
        cost = sum(
            v for k, v in timings.items() if k in ("audit: image signatures", "analyse: audit", "analyse: slices")
        )
        # the same build without the audit and the slices (and so without leakage), from a fresh cache
        off = spec.replace(f"cache_dir: {tmp}/cache", f"cache_dir: {tmp}/cache-off").replace(
            f"output: {{dir: {tmp}/out}}", f"output: {{dir: {tmp}/out-off}}"
        )
        off += "report: {audit: false, slices: false}\n"
        t0 = time.perf_counter()
        build(loads_spec(off), progress=False)
        wall_off = time.perf_counter() - t0
        results["cost"] = {
            "build_s": wall,
            "build_without_s": wall_off,
            "added": wall / wall_off - 1,
            "audit_and_slices_stages_s": cost,
            "timings": {k: round(v, 2) for k, v in timings.items()},
        }
        # the checkpoint with a damaged layer: blocks.5 scrambled
        import torch

        from reportgen.models import load_model
        from reportgen.spec import ModelSpec

        m = load_model(
            ModelSpec(
                name="x",
                timm="tf_efficientnet_lite0",
                weights="efficientnet_lite0",
                input_size=args.px,
                layers=["global_pool"],
            )
        )
        state = m.module.state_dict()
        g = torch.Generator().manual_seed(0)
        for k, v in state.items():
            if k.startswith("blocks.5.") and v.is_floating_point() and v.ndim == 4:
                state[k] = v[torch.randperm(v.shape[0], generator=g)]
        torch.save(state, tmp / "damaged.pt")
        damaged = model.replace("name: effnet", "name: damaged").replace(
            "weights: efficientnet_lite0", f"checkpoint: {tmp}/damaged.pt"
        )
        spec2 = f"""
title: damaged checkpoint
dataset: {{kind: npz, path: {tmp}/test.npz, name: test, class_names: {json.dumps(CLASSES)}}}
models: [{model}, {damaged}]
reducers: [pca]
output: {{dir: {tmp}/out2}}
cache_dir: {tmp}/cache
"""
        t0 = time.perf_counter()
        res2 = build(loads_spec(spec2), progress=False)
        results["diff"] = {
            "build_s": time.perf_counter() - t0,
            "overlap": {
                l.layer: res2.report.build_metrics["damaged"][l.layer]["neighbour_overlap"]
                for l in res2.models[1].layers
            },
            "findings": [h.text for h in res2.report.headlines if h.id.startswith("diff/")],
            "diff_s": res2.stats.timings.get("model comparison", 0),
        }
        results["findings_top"] = [f["text"] for f in s["findings"][:8]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    for k in ("label_issues", "exact_duplicates", "near_duplicates", "leakage"):
        r = results[k]
        print(
            f"{k:<18} planted {r['planted']:>5} found {r['found']:>5} precision "
            f"{r['precision'] if r['precision'] is None else round(r['precision'], 3)} "
            f"recall {r['recall'] if r['recall'] is None else round(r['recall'], 3)}"
        )
    print(f"slice: {results.get('slice')}")
    print(f"diff overlap per layer: {results['diff']['overlap']}")
    c = results["cost"]
    print(
        f"audit + slices + leakage: build {c['build_s']:.1f} s with, {c['build_without_s']:.1f} s without: "
        f"+{100 * c['added']:.1f} % (their own stages {c['audit_and_slices_stages_s']:.1f} s)"
    )
    d = results["diff"]
    print(f"diff: {d['diff_s']:.1f} s of the comparison stage in a {d['build_s']:.1f} s two-model build")
    print(json.dumps(results["findings_top"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
