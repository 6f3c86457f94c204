"""The GPU check: every GPU row in one run, ratios against baselines timed in the same run.

    python benchmarks/gpu.py                  # on a machine with CUDA (about 5 minutes on an H100)
    python benchmarks/gpu.py --device cpu --small   # the same code on the CPU, small sizes (a smoke test)

Rows: the bare channels_last forward of EfficientNet-Lite0 at 224 px (fp32 and bf16, the
baselines); reportgen's extraction of 3 layers of Fashion-MNIST (10,000 and 70,000 images) in fp32
and bf16, as a ratio of the bare forward of the same precision (target >= 0.8); a JPEG image folder
with nvjpeg decoding; CPU-vs-GPU agreement on 600 digits; the Ray path with one GPU actor.
Writes benchmarks/results/gpu.json (after every row, so a run cut short keeps what it measured);
copy the table into docs/benchmarks.md with the card's name. ``--parts`` runs a subset (e.g. the Ray
row alone, where Ray is installed); a part that fails is reported as a row and the others still run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

FASHION = Path(os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
LAYERS = ["blocks.2", "blocks.4", "global_pool"]
ROWS: list[dict] = []
OUT: dict = {}
PARTS = ("bare", "extract", "jpeg", "parity", "ray")


def save() -> None:
    out = OUT["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": OUT["machine"], "rows": ROWS}, indent=1) + "\n")


def row(stage: str, n: int, per_s: float, baseline: float | None, target: str, ok: bool | None, note: str = "") -> None:
    r = {
        "stage": stage,
        "N": n,
        "images_per_s": round(per_s, 1),
        "baseline_images_per_s": None if baseline is None else round(baseline, 1),
        "ratio": None if not baseline else round(per_s / baseline, 3),
        "target": target,
        "pass": ok,
        "note": note,
    }
    ROWS.append(r)
    save()
    print(
        f"{stage:<52} {n:>7} {per_s:>10.1f} {('-' if baseline is None else f'{baseline:.1f}'):>10} "
        f"{('-' if r['ratio'] is None else r['ratio']):>7} "
        f"{target:>8} {('-' if ok is None else ('pass' if ok else 'MISS')):>5}  {note}",
        flush=True,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def model_spec(size: int, **kw):
    from reportgen.spec import ModelSpec

    return ModelSpec(
        name="effnet",
        timm="tf_efficientnet_lite0",
        weights="efficientnet_lite0",
        input_size=size,
        crop_pct=1.0,
        layers=LAYERS,
        **kw,
    )


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
        ds = load_dataset(
            IdxDataset(
                kind="idx",
                images=[FASHION / "train-images-idx3-ubyte.gz", FASHION / "t10k-images-idx3-ubyte.gz"],
                labels=[FASHION / "train-labels-idx1-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"],
            )
        )
    else:
        print("note: Fashion-MNIST not found (set FASHION_MNIST=folder); using digits", flush=True)
        ds = load_dataset(DigitsDataset(kind="digits"))
    return ds, select_samples(ds, limit=min(n, len(ds)), method="first", seed=0).indices


def extraction(device: str, n: int, size: int, batch: int, precision: str, ds=None, idx=None) -> tuple[float, object]:
    """Images/s of reportgen's extraction of 3 layers (decode, feed, forward, pool, copy back)."""
    from reportgen.embed.extractor import Extractor
    from reportgen.embed.layers import resolve_layers
    from reportgen.models import load_model

    if ds is None:
        ds, idx = fashion(n)
    m = load_model(model_spec(size, device=device, batch_size=batch, precision=precision))
    ex = Extractor(
        m,
        resolve_layers(m.module, model_spec(size).layers),
        batch_size=batch,
        precision=precision,
        expected_samples=len(idx),
    )
    ex.run(ds, idx[: batch * 2])  # warm-up: cuDNN autotuning, worker start, tracing
    sync(device)
    t0 = time.perf_counter()
    shard = ex.run(ds, idx)
    sync(device)
    return len(idx) / (time.perf_counter() - t0), (ex, shard)


def loader_ceiling(device: str, n: int, size: int, batch: int, ds, idx) -> float:
    """Images/s of the decode workers alone (read, thumbnail, hash, collate, pinned copy): the most
    any extraction of this dataset can reach with these workers, whatever the device."""
    from torch.utils.data import DataLoader

    from reportgen.embed.feeding import PreparedImages, choose_feeding, collate, default_workers
    from reportgen.models import load_model

    m = load_model(model_spec(size, device=device, batch_size=batch))
    ex_feeding = choose_feeding(ds, device)
    workers = default_workers(len(idx))
    t0 = time.perf_counter()
    if (
        ex_feeding.resize == "device" and ex_feeding.decode == "cpu" and ds.array is not None
    ):  # what Extractor.run does for arrays
        import torch

        from reportgen.embed.feeding import PinnedRing, array_extras, array_hashes, array_pixels
        from reportgen.images.device import thumbnails_on_device

        ring = PinnedRing() if device.startswith("cuda") else None
        for b in range(0, len(idx), batch):
            raw = array_pixels(ds, idx[b : b + batch])
            sent = (ring.stage(raw) if ring is not None else torch.from_numpy(raw)).to(device, non_blocking=True)
            if ring is not None:
                ring.sent(device)
            if thumbnails_on_device(sent, 32) is None:
                array_extras(raw, 32)
            else:
                array_hashes(raw)
    else:
        loader = DataLoader(
            PreparedImages(ds, idx, m.preprocess, 32, ex_feeding),
            batch_size=batch,
            num_workers=workers,
            collate_fn=collate,
            prefetch_factor=4 if workers else None,
            pin_memory=device.startswith("cuda"),
        )
        for pixels, *_ in loader:
            if pixels is not None and not isinstance(pixels, list):
                pixels.to(device, non_blocking=True)
    sync(device)
    return len(idx) / (time.perf_counter() - t0)


def profiled(device: str, n: int, size: int, batch: int, precision: str, ds, idx, dest: Path) -> None:
    """cProfile of the driver process over one extraction: where its time goes when a target is missed."""
    prof = cProfile.Profile()
    prof.enable()
    extraction(device, n, size, batch, precision, ds, idx)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
    dest.write_text(buf.getvalue())
    print(f"profile written to {dest}", flush=True)


def guarded(part: str, fn) -> None:
    try:
        fn()
    except Exception as exc:  # one broken part must not hide the other rows
        traceback.print_exc()
        row(
            f"{part}: FAILED",
            0,
            0.0,
            None,
            "-",
            False,
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
        )


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
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = ap.parse_args()
    import torch

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --small to exercise the script", file=sys.stderr)
        return 2
    small = args.small
    size, batch, secs = (64, 32, 2.0) if small else (224, 256, 10.0)
    sizes = (300, 2600) if small else (10_000, 70_000)
    card = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    machine = {
        "device": device,
        "card": card,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    try:
        import timm

        machine["timm"] = timm.__version__
    except ImportError:
        pass
    OUT.update(path=args.out, machine=machine)
    print(f"machine: {machine}")
    print(f"{'stage':<52} {'N':>7} {'img/s':>10} {'baseline':>10} {'ratio':>7} {'target':>8} {'pass':>5}")
    precisions = ("fp32", "bf16") if device.startswith("cuda") else ("fp32",)
    bare: dict[str, float] = {}

    def run_bare() -> None:
        for p in precisions:
            bare[p] = bare_forward(device, size, batch, p, secs)
            row(
                f"bare forward, channels_last, {p}",
                0,
                bare[p],
                None,
                "-",
                None,
                f"{size} px, batch {batch}, device-resident input",
            )

    def run_extract() -> None:
        for n in sizes:
            ds, idx = fashion(n)
            try:
                ceiling = loader_ceiling(device, n, size, batch, ds, idx)
            except Exception as exc:  # the extraction rows still run
                traceback.print_exc()
                row("reading alone: FAILED", len(idx), 0.0, None, "-", False, f"{type(exc).__name__}: {exc}")
                ceiling = None
            if ceiling is not None:
                row(
                    "reading alone (the feeding ceiling)",
                    len(idx),
                    ceiling,
                    bare.get("fp32"),
                    "-",
                    None,
                    "read, thumbnail, hash, pinned copy; "
                    + (
                        "in the driving thread"
                        if ds.array is not None and device.startswith("cuda")
                        else "decode workers"
                    ),
                )
            for p in precisions:
                rate, (ex, _) = extraction(device, n, size, batch, p, ds, idx)
                ok = rate / bare[p] >= 0.8 if p in bare else None
                row(
                    f"extraction, 3 layers, {p}",
                    len(idx),
                    rate,
                    bare.get(p),
                    ">= 0.80",
                    ok,
                    f"{size} px; feeding {ex.feeding(ds).as_dict()}"
                    + (f"; agreement {ex.agreement}" if ex.agreement else ""),
                )
                if ok is False and n == sizes[0]:
                    profiled(device, n, size, batch, p, ds, idx, args.out.with_name(f"gpu-profile-{p}.txt"))

    def run_jpeg() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = jpeg_folder(Path(tmp), 200 if small else 8_000)
            from reportgen.datasets import load_dataset
            from reportgen.datasets.image_folder import ImageFolderDataset

            ds = load_dataset(ImageFolderDataset(kind="image_folder", path=root))
            idx = np.arange(len(ds))
            ceiling = loader_ceiling(device, len(ds), size, batch, ds, idx)
            row(
                "decode workers alone, JPEG folder",
                len(ds),
                ceiling,
                bare.get("fp32"),
                "-",
                None,
                "reading the files (nvjpeg decodes on the device)",
            )
            rate, (ex, _) = extraction(device, len(ds), size, batch, "fp32", ds, idx)
            row(
                "extraction, JPEG folder (decoded on the device where it can)",
                len(ds),
                rate,
                bare.get("fp32"),
                "stated",
                None,
                f"feeding {ex.feeding(ds).as_dict()}",
            )

    def run_parity() -> None:  # CPU vs GPU agreement on 600 digits: the same Extractor on both devices
        if not device.startswith("cuda"):
            return
        from reportgen.compute.kernels import knn_accuracy
        from reportgen.compute.neighbours import exact_graph
        from reportgen.compute.similarity import linear_cka
        from reportgen.datasets import load_dataset
        from reportgen.datasets.digits import DigitsDataset

        digits = load_dataset(DigitsDataset(kind="digits"))
        idx = np.arange(600)
        _, (_, on_cpu) = extraction("cpu", 600, 96, 100, "fp32", digits, idx)
        _, (_, on_gpu) = extraction(device, 600, 96, 100, "fp32", digits, idx)
        y = digits.labels[idx]
        notes = []
        for layer in LAYERS:
            a, b = on_cpu.embeddings[layer], on_gpu.embeddings[layer]
            rel = float(np.abs(a - b).max() / (np.abs(a).max() or 1))
            notes.append(
                f"{layer}: CKA {linear_cka(a, b):.5f}, max rel diff {rel:.2e}, kNN "
                f"{knn_accuracy(exact_graph(a, 10), y, 10):.3f} vs {knn_accuracy(exact_graph(b, 10), y, 10):.3f}"
            )
        row("CPU vs GPU agreement, 600 digits", 600, 0.0, None, "-", None, "; ".join(notes))

    def run_ray() -> None:  # Ray with one GPU actor
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print("note: ray not installed; Ray row skipped", flush=True)
            return
        from reportgen.pipeline import extract_embeddings
        from reportgen.spec import loads_spec

        n = sizes[0]
        for label, engine in (("local path", "local"), ("Ray, one actor (incl. cluster start)", "ray")):
            with tempfile.TemporaryDirectory() as tmp:
                text = (
                    (
                        f"dataset: {{kind: idx, images: {FASHION}/t10k-images-idx3-ubyte.gz, labels: "
                        f"{FASHION}/t10k-labels-idx1-ubyte.gz, limit: {n}}}\n"
                    )
                    if (FASHION / "t10k-images-idx3-ubyte.gz").exists()
                    else f"dataset: {{kind: digits, limit: {min(n, 1797)}}}\n"
                )
                text += (
                    f"models: [{{name: effnet, timm: tf_efficientnet_lite0, weights: efficientnet_lite0, input_size: "
                    f"{size}, crop_pct: 1.0, batch_size: {batch},"
                    f" device: {'cuda' if device.startswith('cuda') else 'cpu'}, layers: [blocks.2, blocks.4, "
                    f"global_pool]}}]\n"
                    f"cache_dir: {tmp}/cache\nexecution: {{engine: {engine}, shard_size: {max(256, n // 8)}, "
                    f"cpus_per_worker: {max(1, len(os.sched_getaffinity(0)) - 1)}}}\n"
                )
                t0 = time.perf_counter()
                _, sel, runs = extract_embeddings(loads_spec(text), progress=False)
                wall = time.perf_counter() - t0
                row(
                    f"extraction through the pipeline, {label}",
                    len(sel.indices),
                    len(sel.indices) / wall,
                    bare.get("fp32"),
                    "-",
                    None,
                    f"engine {runs[0].embeddings.manifest.get('engine')}, wall {wall:.1f} s incl. model load",
                )

    if any(p in parts for p in ("extract", "jpeg", "ray")) and "bare" not in parts:
        parts.insert(0, "bare")  # every ratio needs its baseline from the same run
    for part, fn in (
        ("bare", run_bare),
        ("extract", run_extract),
        ("jpeg", run_jpeg),
        ("parity", run_parity),
        ("ray", run_ray),
    ):
        if part in parts:
            guarded(part, fn)
    save()
    missed = [r["stage"] for r in ROWS if r["pass"] is False]
    print(f"\nwritten {args.out}; {len(missed)} target(s) missed" + (f": {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
