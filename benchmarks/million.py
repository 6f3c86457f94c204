"""Findings at a million: planted problems in a million precomputed embeddings whose images look
alike, each detector's recall and precision, the build's time and peak memory, and what each
budgeted stage skipped.

    python benchmarks/million.py                  # 1,000,000 + a compared set of 20,000 (about 20 minutes)
    python benchmarks/million.py --n 50000        # the same shape, smaller
    python benchmarks/million.py --mirrors        # with report.mirrored_copies (mirrored pairs searched too)

The data set (made once, seeded, in ``--data``): 100 classes of Zipf-like sizes; each sample a
point of a 6-d latent space (its class's centre + spread), its vector ``sin(z W + b)`` in 384
dimensions (a curved 6-d manifold) + noise, its image a 16 px RGB picture drawn from the same
latent point: one grey background, one soft coloured blob and faint stripes - smooth, low-detail
images much alike, where random pairs are closer than the copies in a photo set.

Planted (rows of the reference set unless said):
- 1 % of labels flipped to a random other class                     -> likely label errors;
- 0.1 % exact copies appended (image and vector)                    -> exact duplicates;
- 0.1 % near copies appended: every edit family of the calibration
  in turn (resampled, re-encoded, cropped, re-lit, grey), the
  vector moved by noise (2 % of its spread)                         -> near duplicates;
- 0.05 % vectors off the manifold (isotropic, as far out)           -> outliers;
- 200 each of dark, light, blurry, low-information and grey images  -> quality flags;
- 4 % "a corrupted batch": vectors pulled toward one point (their
  classes mixed there), metadata ``batch: B``                        -> a slice (and its name);
- a compared set of 20,000 from the same distribution, 1 % copied
  from the reference (half exact, half edited)                      -> leakage.

Writes benchmarks/results/million-<n>.json; the table goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from findings import pr
from run import machine

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 100
LATENT = 6
DIM = 384
SIDE = 16
QUALITY = ("dark", "light", "blurry", "low_information", "grayscale")

SPEC = """
title: alike {n}
seed: 0
datasets:
  - {{kind: embeddings, vectors: {d}/train_vectors.npy, images: {d}/train_images.npy, metadata: {d}/train_meta.tsv,
      name: train}}
  - {{kind: embeddings, vectors: {d}/test_vectors.npy, images: {d}/test_images.npy, metadata: {d}/test_meta.tsv,
      name: test}}
reducers: [{{pca: {{n_components: 10}}}}, {{tsne: {{perplexity: 30}}}}, {{umap: {{n_neighbors: 15}}}}]
report: {{mosaic_cap: 1500, thumbnail_px: {px}, mirrored_copies: {mirrors}}}
output: {{dir: {out}, max_html_mb: 10}}
cache_dir: {cache}
"""

CHILD = r"""
import json, logging, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)  # stage times, live
t0 = time.perf_counter()
from reportgen.pipeline import ProcessHooks, build
from reportgen.spec import load_spec
hooks = ProcessHooks(reset_peaks=True, trim_memory=True)  # its own process, as the CLI
res = build(load_spec(sys.argv[1]), progress=False, hooks=hooks)
wall = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
layer = res.report.models[0].layers[0]
audit = layer.findings["audit"]
out = {"label_issues": audit.label_issues, "suggested": audit.suggested[audit.label_issues],
       "near_pairs": np.asarray(audit.near_pairs).reshape(-1, 2), "outliers": audit.outliers,
       "duplicate_rows": np.concatenate(audit.duplicate_groups) if audit.duplicate_groups else np.zeros(0, int),
       "duplicate_group": np.concatenate([np.full(len(g), k) for k, g in enumerate(audit.duplicate_groups)])
       if audit.duplicate_groups else np.zeros(0, int)}
q = res.report.build_findings.get("quality")
if q is not None:
    from reportgen.compute.quality import KINDS
    for kind in KINDS:
        out["quality_" + kind] = q.flags.rows(kind)
sl = layer.findings.get("slices")
if sl is not None:
    for s in sl.slices:
        out[f"slice_{s.id}"] = s.rows
shift = res.report.build_findings.get("compare_datasets")
if shift is not None:
    for l in shift.leaks:
        out["leak_rows"] = l.rows
np.savez(sys.argv[2], **out)
names = [d.as_dict() for d in res.report.descriptions.values()]
info = {"wall_s": wall, "timings_s": dict(res.stats.timings), "peak_rss_mb": dict(res.stats.peak_rss_mb),
        "final_hwm_mb": hwm, "samples": len(res.ids), "html_bytes": res.html_bytes,
        "near_threshold": audit.near_threshold, "near_search": dict(audit.twin_budget),
        "near_recall_by_edit": dict(audit.twin_recall), "calibration": audit.calibration,
        "slices": [{"id": s.id, "size": int(len(s.rows)), "knn_accuracy": s.knn_accuracy} for s in sl.slices]
        if sl is not None else [], "overall": sl.overall if sl is not None else None,
        "leak_threshold": [l.threshold for l in shift.leaks] if shift is not None else [],
        "findings": [h.text for h in res.report.headlines][:20], "descriptions": names[:40]}
print("RESULT " + json.dumps(info, default=str))
"""


def _latents(rng: np.random.Generator, n: int, centres: np.ndarray, sizes: np.ndarray):
    y = rng.choice(CLASSES, n, p=sizes)
    z = centres[y] + 0.35 * rng.normal(size=(n, LATENT))
    return y, z


def _vectors(z: np.ndarray, w: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (np.sin(z @ w + b) + 0.05 * rng.normal(size=(len(z), DIM))).astype(np.float32)


def _images(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth 16 px pictures drawn from the latent point: a grey background, a soft blob of a colour
    that stands out from it, faint stripes, and sensor noise (1.5 grey levels: no two photographs are
    the same to the pixel)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / (SIDE - 1)
    t = np.tanh(z / 2).astype(np.float32)
    cx, cy = 0.5 + 0.3 * t[:, 0, None, None], 0.5 + 0.3 * t[:, 1, None, None]
    s = 0.18 + 0.08 * t[:, 2, None, None]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
    colour = 128 + np.sign(t[:, 3:6]) * (45 + 75 * np.abs(t[:, 3:6]))  # (n, 3), 45-120 levels off the grey
    stripes = 6 * np.sin(2 * np.pi * (1.5 + t[:, 4, None, None]) * (xx * (1 + t[:, 5, None, None]) + yy))
    img = 128 + blob[..., None] * (colour[:, None, None, :] - 128) + stripes[..., None]
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _quality(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    a = img.astype(np.float32)
    if kind == "dark":
        a = a * rng.uniform(0.12, 0.25)
    elif kind == "light":
        a = 245 + a * 0.04
    elif kind == "blurry":
        big = Image.fromarray(img).resize((64, 64), Image.BICUBIC).filter(ImageFilter.GaussianBlur(6))
        a = np.asarray(big.resize((SIDE, SIDE), Image.BILINEAR), np.float32)
    elif kind == "low_information":
        a = np.full_like(a, rng.integers(0, 255)) + rng.normal(0, 2, a.shape)
    else:  # grayscale in a colour set
        a = np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def prepare(data: Path, n: int, n_test: int) -> dict:
    """The data set and the truth of what was planted; made once per (n, n_test) and reused."""
    truth_file = data / "truth.npz"
    if truth_file.exists():
        t = dict(np.load(truth_file, allow_pickle=False))
        if int(t["n"]) == n and int(t["n_test"]) == n_test:
            return t
    from numpy.lib.format import open_memmap

    from reportgen.compute.twin_calibration import FAMILIES

    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = 1.0 / np.arange(1, CLASSES + 1) ** 0.8
    sizes /= sizes.sum()
    centres = rng.normal(0, 2.0, (CLASSES, LATENT))
    w = rng.normal(0, 0.9, (LATENT, DIM))
    b = rng.uniform(0, 2 * np.pi, DIM)
    n_exact = n_near = n // 1000
    base_n = n - n_exact - n_near
    vec = open_memmap(data / "train_vectors.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    img = open_memmap(data / "train_images.npy", mode="w+", dtype=np.uint8, shape=(n, SIDE, SIDE, 3))
    labels = np.empty(n, np.int64)
    latents = np.empty((base_n, LATENT), np.float32)
    for s in range(0, base_n, 50_000):
        m = min(50_000, base_n - s)
        y, z = _latents(rng, m, centres, sizes)
        labels[s : s + m], latents[s : s + m] = y, z
        vec[s : s + m] = _vectors(z, w, b, rng)
        img[s : s + m] = _images(z, rng)
    spread = float(np.asarray(vec[: min(base_n, 50_000)]).std())
    # the corrupted batch: pulled toward one point, where the classes mix
    batch = np.sort(rng.choice(base_n, base_n // 25, replace=False))
    centre = _vectors(rng.normal(0, 1.2, (1, LATENT)), w, b, rng)[0]
    vec[batch] = 0.35 * vec[batch] + 0.65 * centre + 0.1 * rng.normal(size=(len(batch), DIM)).astype(np.float32)
    free = np.setdiff1d(np.arange(base_n), batch)
    flips = np.sort(rng.choice(free, base_n // 100, replace=False))
    true_labels = labels.copy()
    labels[flips] = (labels[flips] + rng.integers(1, CLASSES, len(flips))) % CLASSES
    free = np.setdiff1d(free, flips)
    outliers = np.sort(rng.choice(free, base_n // 2000, replace=False))
    far = rng.normal(size=(len(outliers), DIM)).astype(np.float32)
    vec[outliers] = far / np.linalg.norm(far, axis=1, keepdims=True) * 2.5 * np.sqrt(DIM) * spread
    free = np.setdiff1d(free, outliers)
    quality = {}
    for kind in QUALITY:
        rows = np.sort(rng.choice(free, 200, replace=False))
        free = np.setdiff1d(free, rows)
        quality[kind] = rows
        for r in rows:
            img[r] = _quality(np.asarray(img[r]), kind, rng)
    clean = free
    # appended copies: exact, then near (every edit family in turn)
    src_exact = rng.choice(clean, n_exact, replace=False)
    src_near = rng.choice(np.setdiff1d(clean, src_exact), n_near, replace=False)
    families = list(FAMILIES)
    near_family = np.array([j % len(families) for j in range(n_near)])
    vec[base_n : base_n + n_exact] = vec[src_exact]
    img[base_n : base_n + n_exact] = img[src_exact]
    labels[base_n : base_n + n_exact] = labels[src_exact]
    for j, (s, f) in enumerate(zip(src_near, near_family)):
        r = base_n + n_exact + j
        img[r] = FAMILIES[families[f]](np.asarray(img[s]), rng)
        vec[r] = vec[s] + 0.02 * spread * rng.normal(size=DIM).astype(np.float32)
        labels[r] = labels[s]
    near_same = np.array([np.array_equal(img[s], img[base_n + n_exact + j]) for j, s in enumerate(src_near)])
    vec.flush()
    img.flush()
    meta_batch = np.zeros(n, bool)
    meta_batch[batch] = True
    with open(data / "train_meta.tsv", "w") as fh:
        fh.write("label\tbatch\n")
        for i in range(n):
            fh.write(f"c{labels[i]:02d}\t{'B' if meta_batch[i] else 'A'}\n")
    # the compared set: fresh samples of the same distribution, 1 % copied from the reference
    y, z = _latents(rng, n_test, centres, sizes)
    tv, ti = _vectors(z, w, b, rng), _images(z, rng)
    leak_rows = np.sort(rng.choice(n_test, n_test // 100, replace=False))
    leak_src = rng.choice(clean, len(leak_rows), replace=False)
    for k, (r, s) in enumerate(zip(leak_rows, leak_src)):
        y[r] = labels[s]
        if k % 2 == 0:
            ti[r], tv[r] = img[s], vec[s]
        else:
            ti[r] = FAMILIES[families[k % len(families)]](np.asarray(img[s]), rng)
            tv[r] = vec[s] + 0.02 * spread * rng.normal(size=DIM).astype(np.float32)
    np.save(data / "test_vectors.npy", tv)
    np.save(data / "test_images.npy", ti)
    with open(data / "test_meta.tsv", "w") as fh:
        fh.write("label\tbatch\n")
        for i in range(n_test):
            fh.write(f"c{y[i]:02d}\tA\n")
    del vec, img
    truth = {
        "n": np.array(n),
        "n_test": np.array(n_test),
        "flips": flips,
        "flip_truth": true_labels[flips],
        "batch": batch,
        "outliers": outliers,
        "exact_src": src_exact,
        "near_src": src_near,
        "near_family": near_family,
        "near_same": near_same,
        "leak_rows": leak_rows,
        **{"quality_" + k: v for k, v in quality.items()},
        "clean": clean,
        "families": np.array(families),
    }
    np.savez(truth_file, **truth)
    return truth


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def score(t: dict, f: dict, n: int) -> dict:
    out: dict = {}
    flips = set(t["flips"].tolist())
    out["label_issues"] = pr(set(f["label_issues"].tolist()), flips)
    right = dict(zip(t["flips"].tolist(), t["flip_truth"].tolist()))
    sug = [right[r] == s for r, s in zip(f["label_issues"].tolist(), f["suggested"].tolist()) if r in right]
    out["label_issues"]["right_suggestion"] = _r(float(np.mean(sug))) if sug else None
    n_exact = len(t["exact_src"])
    base_n = n - n_exact - len(t["near_src"])
    exact_pairs = {(int(s), base_n + j) for j, s in enumerate(t["exact_src"])}
    # a near copy pixel-identical to its original ("nearest 1.5x and back" of a smooth image) is an exact one
    exact_pairs |= {(int(s), base_n + n_exact + j) for j, s in enumerate(t["near_src"]) if t["near_same"][j]}
    groups: dict[int, list[int]] = {}
    for r, g in zip(f["duplicate_rows"].tolist(), f["duplicate_group"].tolist()):
        groups.setdefault(g, []).append(r)
    found_exact = {(min(g), b) for g in groups.values() for b in sorted(g)[1:]}
    out["exact_duplicates"] = pr(found_exact, exact_pairs)
    near_pairs = {(int(s), base_n + n_exact + j) for j, s in enumerate(t["near_src"]) if not t["near_same"][j]}
    found_near = {tuple(sorted(map(int, p))) for p in f["near_pairs"]}
    out["near_duplicates"] = pr(found_near, near_pairs)
    fams = [str(x) for x in t["families"]]
    by: dict[str, list[int]] = {}
    for j, (s, k) in enumerate(zip(t["near_src"], t["near_family"])):
        p = (int(s), base_n + n_exact + j)
        if t["near_same"][j]:
            continue  # an exact duplicate: scored there
        by.setdefault(fams[k], []).append(int(p in found_near))
    out["near_duplicates"]["recall_by_edit"] = {k: round(float(np.mean(v)), 3) for k, v in by.items()}
    out["outliers"] = pr(set(f["outliers"].tolist()), set(t["outliers"].tolist()))
    clean = set(t["clean"].tolist())
    flagged = set()
    out["quality"] = {}
    for kind in QUALITY:
        rows = set(f.get("quality_" + kind, np.zeros(0, int)).tolist())
        flagged |= rows
        out["quality"][kind] = pr(rows, set(t["quality_" + kind].tolist()))
    out["quality_clean_share"] = round(len(flagged & clean) / max(len(clean), 1), 5)
    batch = set(t["batch"].tolist())
    slices = [(k, set(v.tolist())) for k, v in f.items() if k.startswith("slice_")]
    if slices:
        k, best = max(slices, key=lambda kv: len(batch & kv[1]) / len(batch | kv[1]))
        out["slice"] = {
            "planted": len(batch),
            "best": k,
            "best_jaccard": round(len(batch & best) / len(batch | best), 4),
            "its_size": len(best),
        }
    out["leakage"] = pr(set(f.get("leak_rows", np.zeros(0, int)).tolist()), set(t["leak_rows"].tolist()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--test", type=int, default=20_000, help="size of the compared set")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "reportgen-alike")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", type=Path, help="build into this new folder and keep it (report, cache)")
    ap.add_argument(
        "--thumbnail-px", type=int, default=32, help="the report's thumbnail side (default: the report's own)"
    )
    ap.add_argument("--mirrors", action="store_true", help="count mirrored copies (report.mirrored_copies)")
    args = ap.parse_args()
    data = args.data / str(args.n)
    t0 = time.perf_counter()
    truth = prepare(data, args.n, args.test)
    made = time.perf_counter() - t0
    print(f"data: {data} ({made:.0f} s to make or read)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        if args.keep and args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: not empty (its cache would make this a rebuild, not a first build)")
        tmp.mkdir(parents=True, exist_ok=True)
        spec = tmp / "spec.yaml"
        spec.write_text(
            SPEC.format(
                n=args.n,
                d=data,
                out=tmp / "out",
                cache=tmp / "cache",
                px=args.thumbnail_px,
                mirrors=str(args.mirrors).lower(),
            )
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = data / "build.log"  # the stages as they end (peak memory each): read it while it runs
        with open(log, "w") as err:
            p = subprocess.run(
                [sys.executable, "-c", CHILD, str(spec), str(tmp / "found.npz")],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                cwd=ROOT,
            )
        if p.returncode != 0:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"build failed (exit {p.returncode}; a negative one: killed by that signal):\n{tail}")
        info = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
        found = dict(np.load(tmp / "found.npz"))
    results = {
        "n": args.n,
        "test": args.test,
        "thumbnail_px": args.thumbnail_px,
        "mirrored_copies": args.mirrors,
        "machine": machine(),
        **info,
        **score(truth, found, args.n),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"million-{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(
        f"build {info['wall_s']:.1f} s, peak RSS {max(info['peak_rss_mb'].values(), default=0):.0f} MB "
        f"(process high-water {info['final_hwm_mb']:.0f} MB), HTML {info['html_bytes'] / 1e6:.1f} MB"
    )
    for k in ("label_issues", "exact_duplicates", "near_duplicates", "outliers", "leakage"):
        r = results[k]
        print(
            f"{k:<18} planted {r['planted']:>6} found {r['found']:>6} precision {_r(r['precision'])} "
            f"recall {_r(r['recall'])}"
        )
    for k, r in results["quality"].items():
        print(
            f"quality {k:<16} planted {r['planted']:>4} found {r['found']:>5} precision {_r(r['precision'])} "
            f"recall {_r(r['recall'])}"
        )
    print(f"clean images flagged: {results['quality_clean_share']:.4%}")
    print(f"slice: {results.get('slice')}")
    print(f"near duplicates by edit: {results['near_duplicates']['recall_by_edit']}")
    print(f"near search: {info['near_search']}")
    top = sorted(info["timings_s"].items(), key=lambda kv: -kv[1])[:12]
    print("stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
