"""The GPU check: every GPU row in one run, ratios against baselines timed in the same run.

    python benchmarks/gpu.py                  # on a machine with CUDA (about 5 minutes on an H100)
    python benchmarks/gpu.py --device cpu --small   # the same code on the CPU, small sizes (a smoke test)

Rows: the bare channels_last forward of EfficientNet-Lite0 at 224 px (fp32 and bf16, the
baselines); reportgen's extraction of 3 layers of Fashion-MNIST (10,000 and 70,000 images) in fp32
and bf16, as a ratio of the bare forward of the same precision (target >= 0.8); a JPEG image folder
with nvjpeg decoding; CPU-vs-GPU agreement on 600 digits; the Ray path with one GPU actor.
Writes benchmarks/results/gpu.json; copy the table into docs/benchmarks.md with the card's name.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

FASHION = Path(os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
LAYERS = ["blocks.2", "blocks.4", "global_pool"]
ROWS: list[dict] = []


def row(stage: str, n: int, per_s: float, baseline: float | None, target: str, ok: bool | None, note: str = "") -> None:
    r = {"stage": stage, "N": n, "images_per_s": round(per_s, 1), "baseline_images_per_s": None if baseline is None else round(baseline, 1),
         "ratio": None if not baseline else round(per_s / baseline, 3), "target": target, "pass": ok, "note": note}
    ROWS.append(r)
    print(f"{stage:<52} {n:>7} {per_s:>10.1f} {('-' if baseline is None else f'{baseline:.1f}'):>10} {('-' if r['ratio'] is None else r['ratio']):>7} "
          f"{target:>8} {('-' if ok is None else ('pass' if ok else 'MISS')):>5}  {note}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def model_spec(size: int, **kw):
    from reportgen.spec import ModelSpec

    return ModelSpec(name="effnet", timm="tf_efficientnet_lite0", weights="efficientnet_lite0", input_size=size, crop_pct=1.0, layers=LAYERS, **kw)


def bare_forward(device: str, size: int, batch: int, precision: str, seconds: float) -> float:
    """Images/s of the model alone on device-resident random input, channels_last, hooks off."""
    import torch

    from reportgen.models import load_model

    m = load_model(model_spec(size, device=device))
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.backends.cudnn.benchmark = True

    def step():
        if dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                m.module(x)
        else:
            m.module(x)

    with torch.inference_mode():
        for _ in range(3):
            step()
        sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += batch
        sync(device)
        return n / (time.perf_counter() - t0)


def fashion(n: int):
    from reportgen.datasets import load_dataset, select_samples
    from reportgen.datasets.digits import DigitsDataset
    from reportgen.datasets.idx import IdxDataset

    if FASHION.exists():
        ds = load_dataset(IdxDataset(kind="idx", images=[FASHION / "train-images-idx3-ubyte.gz", FASHION / "t10k-images-idx3-ubyte.gz"],
                                     labels=[FASHION / "train-labels-idx1-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"]))
    else:
        print("note: Fashion-MNIST not found (set FASHION_MNIST=folder); using digits", flush=True)
        ds = load_dataset(DigitsDataset(kind="digits"))
    return ds, select_samples(ds, limit=min(n, len(ds)), method="first", seed=0).indices


def extraction(device: str, n: int, size: int, batch: int, precision: str, ds=None, idx=None) -> tuple[float, object]:
    """Images/s of reportgen's extraction of 3 layers (decode, feed, forward, pool, copy back)."""
    from reportgen.extract import Extractor, resolve_layers
    from reportgen.models import load_model

    if ds is None:
        ds, idx = fashion(n)
    m = load_model(model_spec(size, device=device, batch_size=batch, precision=precision))
    ex = Extractor(m, resolve_layers(m.module, model_spec(size).layers), batch_size=batch, precision=precision, expected_samples=len(idx))
    ex.run(ds, idx[: batch * 2])  # warm-up: cuDNN autotuning, worker start, tracing
    sync(device)
    t0 = time.perf_counter()
    shard = ex.run(ds, idx)
    sync(device)
    return len(idx) / (time.perf_counter() - t0), (ex, shard)


def jpeg_folder(tmp: Path, n: int) -> Path:
    """n JPEG photos (scikit-image's samples, shifted and cropped so each differs) in 4 classes."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    root = tmp / "jpegs"
    for c, img in enumerate(photos):
        (root / f"c{c}").mkdir(parents=True)
        for j in range(n // len(photos)):
            Image.fromarray(np.roll(img, 13 * j, axis=1)).save(root / f"c{c}" / f"{j:05d}.jpg", quality=90)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small sizes (a smoke test of the script itself)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = ap.parse_args()
    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --small to exercise the script", file=sys.stderr)
        return 2
    small = args.small
    size, batch, secs = (64, 32, 2.0) if small else (224, 256, 10.0)
    sizes = (300, 600) if small else (10_000, 70_000)
    card = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    machine = {"device": device, "card": card, "torch": torch.__version__, "python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    print(f"machine: {machine}")
    print(f"{'stage':<52} {'N':>7} {'img/s':>10} {'baseline':>10} {'ratio':>7} {'target':>8} {'pass':>5}")
    precisions = ("fp32", "bf16") if device.startswith("cuda") else ("fp32",)
    bare = {p: bare_forward(device, size, batch, p, secs) for p in precisions}
    for p in precisions:
        row(f"bare forward, channels_last, {p}", 0, bare[p], None, "-", None, f"{size} px, batch {batch}, device-resident input")
    for n in sizes:
        ds, idx = fashion(n)
        for p in precisions:
            rate, (ex, _) = extraction(device, n, size, batch, p, ds, idx)
            row(f"extraction, 3 layers, {p}", len(idx), rate, bare[p], ">= 0.80", rate / bare[p] >= 0.8,
                f"{size} px; feeding {ex.feeding(ds).as_dict()}" + (f"; agreement {ex.agreement}" if ex.agreement else ""))
    with tempfile.TemporaryDirectory() as tmp:
        root = jpeg_folder(Path(tmp), 200 if small else 8_000)
        from reportgen.datasets import load_dataset
        from reportgen.datasets.image_folder import ImageFolderDataset

        ds = load_dataset(ImageFolderDataset(kind="image_folder", path=root))
        rate, (ex, _) = extraction(device, len(ds), size, batch, "fp32", ds, np.arange(len(ds)))
        row("extraction, JPEG folder (decoded on the device where it can)", len(ds), rate, bare["fp32"], "stated", None, f"feeding {ex.feeding(ds).as_dict()}")
    # CPU vs GPU agreement on 600 digits: the same Extractor on both devices
    if device.startswith("cuda"):
        from reportgen.datasets import load_dataset
        from reportgen.datasets.digits import DigitsDataset
        from reportgen.kernels import knn_accuracy, linear_cka
        from reportgen.neighbours import exact_graph

        digits = load_dataset(DigitsDataset(kind="digits"))
        idx = np.arange(600)
        _, (_, on_cpu) = extraction("cpu", 600, 96, 100, "fp32", digits, idx)
        _, (_, on_gpu) = extraction(device, 600, 96, 100, "fp32", digits, idx)
        y = digits.labels[idx]
        notes = []
        for layer in LAYERS:
            a, b = on_cpu.embeddings[layer], on_gpu.embeddings[layer]
            rel = float(np.abs(a - b).max() / (np.abs(a).max() or 1))
            notes.append(f"{layer}: CKA {linear_cka(a, b):.5f}, max rel diff {rel:.2e}, kNN {knn_accuracy(exact_graph(a, 10), y, 10):.3f} vs {knn_accuracy(exact_graph(b, 10), y, 10):.3f}")
        row("CPU vs GPU agreement, 600 digits", 600, 0.0, None, "-", None, "; ".join(notes))
    # Ray with one GPU actor
    try:
        import ray  # noqa: F401

        from reportgen.pipeline import extract_embeddings
        from reportgen.spec import loads_spec

        n = sizes[0]
        with tempfile.TemporaryDirectory() as tmp:
            text = (f"dataset: {{kind: idx, images: {FASHION}/t10k-images-idx3-ubyte.gz, labels: {FASHION}/t10k-labels-idx1-ubyte.gz, limit: {n}}}\n"
                    if FASHION.exists() else f"dataset: {{kind: digits, limit: {min(n, 1797)}}}\n")
            text += (f"models: [{{name: effnet, timm: tf_efficientnet_lite0, weights: efficientnet_lite0, input_size: {size}, crop_pct: 1.0, batch_size: {batch},"
                     f" device: {'cuda' if device.startswith('cuda') else 'cpu'}, layers: [blocks.2, blocks.4, global_pool]}}]\n"
                     f"cache_dir: {tmp}/cache\nexecution: {{engine: ray, shard_size: {max(256, n // 8)}, cpus_per_worker: {max(1, len(os.sched_getaffinity(0)) - 1)}}}\n")
            t0 = time.perf_counter()
            _, sel, runs = extract_embeddings(loads_spec(text), progress=False)
            wall = time.perf_counter() - t0
            row("extraction on Ray, one actor (incl. cluster start)", len(sel.indices), len(sel.indices) / wall, bare["fp32"], "-", None,
                f"engine {runs[0].embeddings.manifest.get('engine')}")
    except ImportError:
        print("note: ray not installed; Ray row skipped", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": ROWS}, indent=1) + "\n")
    missed = [r["stage"] for r in ROWS if r["pass"] is False]
    print(f"\nwritten {args.out}; {len(missed)} target(s) missed" + (f": {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
