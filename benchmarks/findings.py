"""Planted problems: each detector's recall and precision on Fashion-MNIST with the packaged
EfficientNet-Lite0, and what the audit, slices and diff cost.

    python benchmarks/findings.py            # about 25 minutes on 2 cores (the cost builds run twice)
    python benchmarks/findings.py --n 2000   # a quicker, smaller run
    python benchmarks/findings.py --px 96 --mirrors --findings-only   # mirrored copies too; one build

Plants, in one data set of n test images (at the model's own 224 px by default; ``--px``; layer global_pool):
- 4 % of labels flipped to a random other class  -> "likely label errors";
- 1 % of images copied exactly (new rows)         -> exact duplicates;
- 1 % near-copies (JPEG 80, up to 4 % brighter or darker, 1 px shift: a random mix, never none) -> near duplicates;
- a second data set ("test") of n/5 images, 10 % of them copied from the first (half exact, half
  edited)                                           -> leakage;
- 4 % of images (any class) corrupted by noise      -> a slice (a corrupted batch);
- a checkpoint whose blocks.5 weights are scrambled -> the diff (neighbourhoods of layers after it).
With ``--mirrors`` the build counts mirrored pictures as copies (``report.mirrored_copies``), the
near copies include horizontally flipped ones (a family of their own) and every other edited leak
is flipped too.
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
from types import SimpleNamespace

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


def plant(n: int, mirrors: bool = False) -> SimpleNamespace:
    """The planted data set (seeded, the same every run): n Fashion-MNIST training images with
    their problems planted, the copies appended, and a second split of n/5; with what was planted
    where (the truth each detector is scored against). ``mirrors``: mirrored near copies and leaks
    too (the same set otherwise, but for which family each near copy is made in)."""
    from reportgen.datasets import load_dataset
    from reportgen.datasets.idx import IdxDataset

    ds = load_dataset(
        IdxDataset(
            kind="idx", images=FASHION / "train-images-idx3-ubyte.gz", labels=FASHION / "train-labels-idx1-ubyte.gz"
        )
    )
    rng = np.random.default_rng(0)
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
    # image-quality problems planted in place (grey images of one size: dark, light, blurry, low information)
    from PIL import Image, ImageFilter

    free = np.setdiff1d(np.arange(n), np.r_[flips, noisy])
    quality_rows = {}
    for kind in ("dark", "light", "blurry", "low_information"):
        rows_k = rng.choice(free, n // 500, replace=False)
        free = np.setdiff1d(free, rows_k)
        quality_rows[kind] = set(rows_k.tolist())
        for r in rows_k:
            im = a_img[r].astype(np.float32)
            if kind == "dark":
                im = im * rng.uniform(0.12, 0.25)
            elif kind == "light":
                im = 245 + im * 0.04
            elif kind == "blurry":
                big = Image.fromarray(a_img[r]).resize((112, 112), Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))
                im = np.asarray(big.resize((28, 28), Image.BILINEAR), np.float32)
            else:
                im = np.full_like(im, rng.integers(0, 255)) + rng.normal(0, 2, im.shape)
            a_img[r] = np.clip(im, 0, 255).astype(np.uint8)
    clean_rows = set(free.tolist())
    # exact and near copies appended as new rows; the near ones made the ways copies get made
    # (every edit family of the calibration, in turn), with the legacy mix (JPEG 80, re-lit, shifted)
    from reportgen.compute.twin_calibration import families

    edits = families(mirrors)
    src_exact = rng.choice(free, n // 100, replace=False)
    src_near = rng.choice(np.setdiff1d(free, src_exact), n // 100, replace=False)
    names = ["JPEG 80, re-lit, shifted", *edits]
    near_family = [names[j % len(names)] for j in range(len(src_near))]

    def copy_of(img: np.ndarray, family: str) -> np.ndarray:
        if family not in edits:
            return edit(img, rng)
        return edits[family](np.repeat(img[:, :, None], 3, 2), rng)[:, :, 0]

    near_imgs = np.stack([copy_of(a_img[i], f) for i, f in zip(src_near, near_family)])
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
        if mirrors and k % 4 == 1:  # every other edited leak is flipped too
            t_img[r] = np.ascontiguousarray(t_img[r][:, ::-1])
        t_lab[r] = a_lab[s]
    return SimpleNamespace(
        n=n,
        true_labels=np.concatenate([labels[:n], labels[:n][src_exact], labels[:n][src_near]]),
        all_img=all_img,
        all_lab=all_lab,
        t_img=t_img,
        t_lab=t_lab,
        flips=flips,
        noisy=noisy,
        quality_rows=quality_rows,
        clean_rows=clean_rows,
        exact_pairs=exact_pairs,
        natural_exact=natural_exact,
        near_pairs=near_pairs,
        near_family=near_family,
        leak_rows=leak_rows,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument(
        "--px",
        type=int,
        default=224,
        help="input size (224: EfficientNet-Lite0's own; 96 is faster and its features weaker)",
    )
    ap.add_argument("--mirrors", action="store_true", help="plant mirrored copies and count them (mirrored_copies)")
    ap.add_argument(
        "--ignore-mirrors", action="store_true", help="with --mirrors: plant them, build without mirrored_copies"
    )
    ap.add_argument("--findings-only", action="store_true", help="one build: no cost builds, no checkpoint diff")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "findings.json")
    args = ap.parse_args()
    if not (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        print(f"skip: Fashion-MNIST not found in {FASHION}")
        return 0
    from reportgen.pipeline import build
    from reportgen.spec import loads_spec

    n = args.n
    p = plant(n, args.mirrors)
    all_img, all_lab, t_img, t_lab, flips, noisy = p.all_img, p.all_lab, p.t_img, p.t_lab, p.flips, p.noisy
    quality_rows, clean_rows, exact_pairs, natural_exact = p.quality_rows, p.clean_rows, p.exact_pairs, p.natural_exact
    near_pairs, near_family, leak_rows = p.near_pairs, p.near_family, p.leak_rows
    counted = args.mirrors and not args.ignore_mirrors
    results: dict = {"n": n, "px": args.px, "mirrors": args.mirrors, "counted": counted, "machine": machine()}
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
        if counted:
            spec += "report: {mirrored_copies: true}\n"
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
        # a near copy pixel-identical to its original ("grey" of a grey image, "nearest 1.5x and
        # back") is an exact duplicate: scored there (as benchmarks/million.py does), not as a near one
        same = {(i, j) for i, j in near_pairs if np.array_equal(all_img[i], all_img[j])}
        results["exact_duplicates"] = pr(found_exact, exact_pairs | natural_exact | same)
        results["exact_duplicates"]["of_them_in_fashion_mnist_itself"] = len(natural_exact)
        results["exact_duplicates"]["of_them_near_copies_identical_to_the_pixel"] = len(same)
        found_near = {tuple(sorted((row[p["a"]], row[p["b"]]))) for p in audit["near_duplicates"]}
        results["near_duplicates"] = pr(found_near, near_pairs - same)
        results["near_duplicates"]["pairs_among_originals"] = sorted(p for p in found_near if p[1] < n)
        by_family: dict[str, list[int]] = {}
        for (i, j), f in zip(sorted(near_pairs, key=lambda p: p[1]), near_family):
            if (i, j) not in same:
                by_family.setdefault(f, []).append(int((i, j) in found_near))
        results["near_duplicates"]["recall_by_edit"] = {f: float(np.mean(v)) for f, v in by_family.items()}
        results["near_duplicates"]["calibrated_recall_by_edit"] = audit.get("near_recall_by_edit")
        results["near_duplicates"]["search"] = audit.get("near_search")
        q = s.get("quality", {}).get("kinds", {})
        flagged_any = {row[i] for ids in q.values() for i in ids}
        results["quality"] = {
            kind: {**pr({row[i] for i in q.get(kind, [])}, planted), "clean_flagged": len(flagged_any & clean_rows)}
            for kind, planted in quality_rows.items()
        }
        results["quality_clean_share"] = len(flagged_any & clean_rows) / max(len(clean_rows), 1)
        results["near_threshold"] = audit["near_threshold"]
        leak = s["leakage"][0]
        test_row = {f"test-{i}": i for i in range(len(t_img))}
        results["leakage"] = pr({test_row[p["id"]] for p in leak["pairs"]}, set(int(r) for r in leak_rows))
        if args.mirrors:
            flipped = {int(r) for k, r in enumerate(leak_rows) if k % 4 == 1}
            said = {test_row[p["id"]] for p in leak["pairs"] if p.get("mirrored")}
            results["leakage"]["mirrored"] = {
                **pr({r for r in said}, flipped),
                "found_of_planted": len(flipped & {test_row[p["id"]] for p in leak["pairs"]}),
            }
            results["near_duplicates"]["said_mirrored"] = sum(bool(p.get("mirrored")) for p in audit["near_duplicates"])
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
        results["timings"] = {k: round(v, 2) for k, v in timings.items()}
        if not args.findings_only:  # the cost builds and the checkpoint diff
            cost = sum(
                v
                for k, v in timings.items()
                if k
                in (
                    "audit: image signatures",
                    "analyse: audit",
                    "analyse: slices",
                    "image quality",
                    "analyse: image properties",
                )
            )
            # the same build without the audit and the slices (and so without leakage), from a fresh cache
            off = spec.replace(f"cache_dir: {tmp}/cache", f"cache_dir: {tmp}/cache-off").replace(
                f"output: {{dir: {tmp}/out}}", f"output: {{dir: {tmp}/out-off}}"
            )
            off += "report: {audit: false, slices: false, describe: {describers: []}}\n"

            # each build twice more from fresh caches, in turn, and the faster of each kept: on this
            # shared 2-core machine one build's wall time moves by 10-20 % from run to run
            def timed(text: str) -> float:
                t0 = time.perf_counter()
                build(loads_spec(text), progress=False)
                return time.perf_counter() - t0

            again = spec.replace(f"cache_dir: {tmp}/cache", f"cache_dir: {tmp}/cache-again").replace(
                f"output: {{dir: {tmp}/out}}", f"output: {{dir: {tmp}/out-again}}"
            )
            walls_off = [timed(off.replace("cache-off", "cache-off0").replace("out-off", "out-off0"))]
            walls = [wall, timed(again)]
            walls_off.append(timed(off.replace("cache-off", "cache-off1").replace("out-off", "out-off1")))
            wall, wall_off = min(walls), min(walls_off)
            results["cost"] = {
                "build_s": wall,
                "build_without_s": wall_off,
                "build_s_each": walls,
                "build_without_s_each": walls_off,
                "added": wall / wall_off - 1,
                "audit_and_slices_stages_s": cost,
                "describe_s": timings.get("describe", 0.0) + timings.get("analyse: image properties", 0.0),
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
    print(json.dumps({k: results[k] for k in ("quality", "quality_clean_share")}, indent=1))
    print(json.dumps(results["near_duplicates"].get("recall_by_edit"), indent=1))
    for k in ("label_issues", "exact_duplicates", "near_duplicates", "leakage"):
        r = results[k]
        print(
            f"{k:<18} planted {r['planted']:>5} found {r['found']:>5} precision "
            f"{r['precision'] if r['precision'] is None else round(r['precision'], 3)} "
            f"recall {r['recall'] if r['recall'] is None else round(r['recall'], 3)}"
        )
    print(f"slice: {results.get('slice')}")
    if args.mirrors:
        print(f"mirrored leaks: {results['leakage']['mirrored']}")
    if args.findings_only:
        print(json.dumps(results["findings_top"], indent=1))
        return 0
    print(f"diff overlap per layer: {results['diff']['overlap']}")
    c = results["cost"]
    print(
        f"audit + slices + leakage: build {c['build_s']:.1f} s with, {c['build_without_s']:.1f} s without: "
        f"+{100 * c['added']:.1f} % (their own stages {c['audit_and_slices_stages_s']:.1f} s; the faster of "
        f"{c['build_s_each']} and of {c['build_without_s_each']})"
    )
    d = results["diff"]
    print(f"diff: {d['diff_s']:.1f} s of the comparison stage in a {d['build_s']:.1f} s two-model build")
    print(json.dumps(results["findings_top"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
