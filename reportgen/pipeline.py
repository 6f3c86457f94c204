"""Pipeline: ``build(spec)`` -> ``BuildResult``; the one place that knows the order of stages.

    data -> models -> extract (cached) -> per layer: PCA, neighbour graph, maps (registry),
    analyses (registry) -> build analyses (comparisons) -> checks -> render -> output

Every cached thing (embeddings, graphs, maps, probes, figures) is keyed by its inputs and by the
fingerprint of the code that makes it (``reportgen.fingerprint``). From the Python API a build
leaves the caller's process as it found it; the CLI opts in to process-wide housekeeping
(``ProcessHooks``: a per-stage peak-memory reset and handing freed heap back to the OS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import logging
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .analyses import ANALYSES, BuildInput, LayerInput, build_analyses, layer_analyses, run_order
from .analyses.audit import audit_k
from .analyses.base import Where
from .checks import evaluate, junit_xml, read_summary
from .datasets import Dataset, Selection, load_dataset, select_samples
from .errors import DataError, ReportgenError, SpecError
from .extract import EMBEDDING_CODE, Extractor, Shard, embeddings_key, resolve_layers
from .fingerprint import code_fingerprint
from .images import LazyThumbnails, Preprocess, make_thumbnail
from .kernels import image_statistics
from .models import PACKAGED_WEIGHTS, LoadedModel, load_model
from .neighbours import GraphQuality, NeighbourGraph, build_graph, nearest_fitted
from .output import check_output_dir, write_report
from .pca import PcaResult, fit_pca
from .reducers import FittedMap, call_fit, make_reducer
from .render import render_report
from .results import (
    BuildResult,
    DatasetInfo,
    Embeddings,
    LayerResult,
    MapResult,
    ModelInfo,
    ModelResult,
    ModelRun,
    ReportData,
    RunStats,
    Samples,
)
from .spec import ReportSpec
from .store import Cache, EmbeddingStore, content_key, file_sha256
from .streaming import cleaned, gather_rows, release_all, select_rows
from .summary import metrics_view, summary_dict

log = logging.getLogger(__name__)

SHARD_SIZE = 8192


def as_path(value: str | os.PathLike | None) -> Path | None:
    """Every path the Python API takes may be a ``str`` or any ``os.PathLike``."""
    return None if value is None else Path(os.fspath(value))


# ----------------------------------------------------------------------------- process facts


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM first: ru_maxrss survives execve, so a
    process started by a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class ProcessHooks:
    """Process-wide housekeeping a build may do; the CLI turns it on, the Python API leaves it off.

    ``reset_peaks``: restart the kernel's peak-RSS mark at each stage (``/proc/self/clear_refs``), so
    every stage reports its own peak; ``trim_memory``: hand freed heap back to the OS after each
    stage (glibc's ``malloc_trim``), so RSS does not ratchet up stage by stage.
    """

    reset_peaks: bool = False
    trim_memory: bool = False

    def reset_peak(self) -> None:
        if not self.reset_peaks:
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def trim(self) -> None:
        if not self.trim_memory:
            return
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class Stages:
    """Wall time and peak RSS per stage. With ``ProcessHooks.reset_peaks`` a stage's peak is its own;
    without, it is the process's peak so far. Peaks nest: an outer stage's covers its inner ones."""

    def __init__(self, hooks: ProcessHooks = ProcessHooks()) -> None:
        self.hooks = hooks
        self.timings: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self._open: list[list] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        now = peak_rss_mb()
        for entry in self._open:
            entry[1] = max(entry[1], now)
        self.hooks.reset_peak()
        entry = [name, 0.0]
        self._open.append(entry)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            peak = max(entry[1], peak_rss_mb())
            release_all()  # pages of memory-mapped layers this stage read: not carried into the next
            self.hooks.trim()
            self._open.remove(entry)
            for outer in self._open:
                outer[1] = max(outer[1], peak)
            self.timings[name] = self.timings.get(name, 0.0) + dt
            self.rss[name] = max(self.rss.get(name, 0.0), peak)
            log.info("stage %-28s %7.2f s  peak RSS %6.0f MB", name, dt, peak)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "reportgen": __version__}
    for pkg in (
        "numpy",
        "torch",
        "timm",
        "scikit-learn",
        "openTSNE",
        "umap-learn",
        "matplotlib",
        "Pillow",
        "Jinja2",
        "pydantic",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- extraction


def _embed(
    spec: ReportSpec,
    mspec,
    loaded: LoadedModel,
    ds: Dataset,
    sel: Selection,
    store: EmbeddingStore,
    *,
    use_cache: bool,
    progress: bool,
    on_bad_image: str | None = None,
) -> Embeddings:
    on_bad_image = on_bad_image or spec.dataset.on_bad_image
    layers = resolve_layers(loaded.module, mspec.layers)
    key = embeddings_key(loaded.info, layers, mspec, ds, sel.indices, spec.report.thumbnail_px, on_bad_image)
    if use_cache:
        hit = store.load(key)
        if hit is not None:
            log.info("model %s: embeddings from cache %s", loaded.name, hit.path)
            return hit
    extractor = Extractor(
        loaded,
        layers,
        batch_size=mspec.batch_size,
        thumbnail_px=spec.report.thumbnail_px,
        on_bad_image=on_bad_image,
        max_features=mspec.max_features,
        num_workers=mspec.num_workers,
        jit=mspec.jit,
        precision=mspec.precision,
        expected_samples=len(sel.indices),
    )
    feeding = extractor.feeding(ds)
    writer = store.writer(key, spec.report.thumbnail_px)
    calls = 0
    try:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(sel.indices),
            desc=f"extract {loaded.name}",
            unit="img",
            disable=None if progress else True,
            leave=False,
            file=sys.stderr,
        )
        try:
            for start in range(0, len(sel.indices), SHARD_SIZE):
                part = sel.indices[start : start + SHARD_SIZE]
                shard: Shard = extractor.run(ds, part, progress=bar.update)
                calls += shard.forward_calls
                writer.append(shard, ds.labels[shard.indices])
                del shard  # one shard in memory at a time
        finally:
            bar.close()
        if writer.count == 0:
            raise DataError(
                f"dataset: none of the {len(sel.indices)} selected images could be read (first: {writer.bad[0][1] if writer.bad else 'no reason given'})"
            )
        ids = [ds.ids[int(i)] for i in np.concatenate(writer.indices)]
        bad = [(ds.ids[i], r) for i, r in writer.bad]
        manifest = {
            "model": {
                "name": loaded.name,
                "arch": loaded.info.arch,
                "source": loaded.info.source,
                "weights_sha256": loaded.info.weights_sha256,
            },
            "dataset": {
                "name": ds.name,
                "kind": ds.kind,
                "fingerprint": ds.fingerprint,
                "class_names": list(ds.class_names),
            },
            "preprocess": loaded.preprocess.as_dict(),
            "thumbnail_px": spec.report.thumbnail_px,
            "feeding": feeding.as_dict(),
            "layer_index": {l.name: l.index for l in layers},
            "agreement": extractor.agreement,
        }
        writer.commit(ids, bad, manifest)
    except BaseException:
        writer.abort()
        raise
    stored = store.load(key, verify=False, origin="computed")
    if stored is None:
        raise ReportgenError(
            f"cache: entry {key} vanished right after it was written; is another process clearing {store.dir}?"
        )
    return dataclasses.replace(stored, forward_calls=calls)


def check_axes(spec: ReportSpec, ds: Dataset) -> None:
    """Class names in report.axes must exist: checked before any model runs."""
    names = ds.class_names
    for i, (a, b) in enumerate(spec.report.axes):
        for c in (a, b):
            if c not in names:
                hint = difflib.get_close_matches(c, names, n=1)
                more = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f" (classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
                )
                raise SpecError(f"report.axes[{i}]: class {c!r} is not in the dataset{more}")
        if a == b:
            raise SpecError(f"report.axes[{i}]: both ends are {a!r}; name two different classes")


#: Above this many samples, thumbnails of precomputed inputs are made on demand (only those shown).
LAZY_THUMBNAILS_ABOVE = 50_000


def _precomputed_run(spec: ReportSpec, ds: Dataset, sel: Selection, scratch: Path) -> ModelRun:
    """Embeddings given as input (vectors, a projector folder): no model, no forward pass. A
    memory-mapped .npy stays memory-mapped; thumbnails of a large input are made on demand."""
    idx = sel.indices
    t = spec.report.thumbnail_px
    if len(idx) > LAZY_THUMBNAILS_ABOVE:
        thumbs = LazyThumbnails(ds.read, idx, t, ds.array)
    else:
        thumbs = np.stack([make_thumbnail(ds.read(int(i)), t) for i in idx])
    layers = {name: select_rows(v, idx, scratch) for name, v in (ds.vectors or {}).items()}
    key = content_key({"input": ds.fingerprint, "selection": hashlib.sha256(idx.tobytes()).hexdigest(), "thumb": t})
    info = ModelInfo(
        name="embeddings",
        arch="precomputed",
        source=f"input file {ds.source}",
        weights_sha256=hashlib.sha256(ds.fingerprint.encode()).hexdigest(),
        preprocess=None,
        device="none (embeddings given as input)",
    )
    hashes = None
    if ds.has_images:  # exact duplicates among the given images
        from .images import image_hash

        hashes = np.frombuffer(b"".join(image_hash(ds.read(int(i))) for i in idx), np.uint8).reshape(len(idx), 16)
    emb = Embeddings(
        key=key,
        origin="input",
        path=None,
        ids=tuple(ds.ids[int(i)] for i in idx),
        indices=idx,
        labels=ds.labels[idx],
        layers=layers,
        reshapes={k: "given" for k in layers},
        thumbnails=thumbs,
        bad=(),
        hashes=hashes,
    )
    return ModelRun(info, emb)


def _quick_key(spec: ReportSpec, mspec, ds: Dataset, sel: Selection) -> str | None:
    """A cache key from the spec alone (architecture, weights file hash, preprocessing options, layers,
    data, code), so a rebuild finds its embeddings without building the model. None for factories
    and objects, whose identity only shows once they are built."""
    from importlib import metadata

    if mspec.factory or mspec.pretrained or not (mspec.timm or mspec.pixels):
        return None  # hub weights can change under the same name: always load those
    parts = {
        "code": code_fingerprint(*EMBEDDING_CODE, "reportgen.models"),
        "model": mspec.model_dump(
            mode="json", exclude={"name", "device", "batch_size", "num_workers", "checkpoint", "channels_last", "jit"}
        ),
        "seed": spec.seed,
        "dataset": ds.fingerprint,
        "selection": hashlib.sha256(sel.indices.tobytes()).hexdigest(),
        "thumb": spec.report.thumbnail_px,
        "on_bad_image": spec.dataset.on_bad_image,
    }
    try:
        parts["timm"] = metadata.version("timm")
        if mspec.weights:
            pw = PACKAGED_WEIGHTS[mspec.weights]
            if pw.file is None:
                return None
            parts["weights_file"] = file_sha256(Path(pw.file()))
        if mspec.checkpoint is not None:
            parts["checkpoint"] = file_sha256(mspec.checkpoint)
    except (ReportgenError, OSError, metadata.PackageNotFoundError):
        return None  # let the normal path report the problem
    return content_key(parts)


def _info_from_manifest(mspec, manifest: Mapping) -> ModelInfo:
    """What the report says about a model whose embeddings this process did not compute (cached, or
    computed by Ray workers)."""
    m = manifest["model"]
    engine = manifest.get("engine") or {}
    nodes = f" on {engine['nodes']} node(s)" if engine.get("nodes") else ""
    device = (
        f"Ray: {engine.get('workers', '?')} worker(s){nodes}, {engine.get('device', 'cpu')}"
        if engine.get("name") == "ray"
        else "not loaded (embeddings from the cache)"
    )
    info = ModelInfo(
        name=mspec.name,
        arch=m["arch"],
        source=m["source"],
        weights_sha256=m["weights_sha256"],
        preprocess=Preprocess.from_dict(manifest["preprocess"]),
        device=device,
    )
    return _with_feeding(info, manifest)


def _embed_on_ray(
    spec: ReportSpec,
    mspec,
    dspec,
    ds: Dataset,
    sel: Selection,
    store: EmbeddingStore,
    *,
    use_cache: bool,
    progress: bool,
    on_shard=None,
) -> Embeddings:
    from .distributed import RayJob, embed_on_ray

    ex = spec.execution
    job = RayJob(
        model=mspec,
        dataset=dspec,
        seed=spec.seed,
        indices=sel.indices,
        folder=store.root / "shards",
        thumbnail_px=spec.report.thumbnail_px,
        on_bad_image=dspec.on_bad_image,
        jit=mspec.jit,
        threads=ex.cpus_per_worker,
        decode_workers=mspec.num_workers,
        dataset_fingerprint=ds.fingerprint,
    )
    return embed_on_ray(job, store, ds, ex, use_cache=use_cache, progress=progress, on_shard=on_shard, name=mspec.name)


def _with_feeding(info: ModelInfo, manifest: Mapping) -> ModelInfo:
    """The model's description plus how its embeddings were fed (precision, agreement with fp32)."""
    feeding = manifest.get("feeding") or {}
    return dataclasses.replace(
        info,
        precision=feeding.get("precision", info.precision),
        feeding={k: v for k, v in feeding.items() if k != "precision"},
        agreement=manifest.get("agreement") or {},
    )


def extract_embeddings(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    modules: dict[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    stages: Stages | None = None,
    on_shard: Callable[[dict], None] | None = None,
) -> tuple[Dataset, Selection, tuple[ModelRun, ...]]:
    """The data, model and extraction stages: every model's embeddings, from the cache or computed.
    ``on_shard`` is called with each finished shard's record (shard, count, forward_calls, pid) when
    extraction runs on Ray (``execution.engine: ray``)."""
    ds, sel, runs, _ = _extract(
        spec,
        use_cache=use_cache,
        cache_dir=cache_dir,
        modules=modules,
        max_samples=max_samples,
        progress=progress,
        stages=stages or Stages(),
        on_shard=on_shard,
    )
    return ds, sel, runs


def _extract(
    spec: ReportSpec, *, use_cache: bool, cache_dir, modules, max_samples, progress: bool, stages: Stages, on_shard=None
):
    """``extract_embeddings`` plus the models it loaded (compared datasets go through them too)."""
    modules = modules or {}
    if spec.execution.engine == "ray" and modules:
        raise SpecError(
            f"execution.engine: ray loads every model in its workers from the spec; a Python module object ({', '.join(modules)}) cannot travel there - use timm, factory or checkpoint, or engine: local"
        )
    loaded_models: dict[str, LoadedModel] = {}
    with stages.stage("data: load"):
        ds = load_dataset(spec.dataset)
        sel = select_samples(
            ds, limit=spec.dataset.limit, method=spec.dataset.sample, seed=spec.seed, max_samples=max_samples
        )
        check_axes(spec, ds)
    if ds.vectors is not None:
        store = EmbeddingStore(as_path(cache_dir) or spec.cache_dir)
        with stages.stage("extract: precomputed"):
            return ds, sel, (_precomputed_run(spec, ds, sel, store.root / "scratch"),), loaded_models
    store = EmbeddingStore(as_path(cache_dir) or spec.cache_dir)
    runs: list[ModelRun] = []
    for mspec in spec.models:
        quick = None if mspec.name in modules else _quick_key(spec, mspec, ds, sel)
        if use_cache and quick and not spec.extra_datasets:
            with stages.stage(f"extract: {mspec.name}"):
                hit = store.load_alias(quick)
            if hit is not None:  # the model need not even be built
                log.info("model %s: embeddings from cache %s (model not loaded)", mspec.name, hit.path)
                runs.append(ModelRun(_info_from_manifest(mspec, hit.manifest), hit))
                continue
        if spec.execution.engine == "ray":  # the workers load the model; this process never imports torch
            with stages.stage(f"extract: {mspec.name}"):
                emb = _embed_on_ray(
                    spec, mspec, spec.dataset, ds, sel, store, use_cache=use_cache, progress=progress, on_shard=on_shard
                )
                if quick:
                    store.save_alias(quick, emb.key)
            runs.append(ModelRun(_info_from_manifest(mspec, emb.manifest), emb))
            continue
        with stages.stage(f"model: load {mspec.name}"):
            loaded = loaded_models[mspec.name] = load_model(mspec, seed=spec.seed, module=modules.get(mspec.name))
        with stages.stage(f"extract: {mspec.name}"):
            emb = _embed(spec, mspec, loaded, ds, sel, store, use_cache=use_cache, progress=progress)
            if quick:
                store.save_alias(quick, emb.key)
        runs.append(ModelRun(_with_feeding(loaded.info, emb.manifest), emb))
    return ds, sel, tuple(runs), loaded_models


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True, eq=False)
class _LayerWork:
    """What analysing one layer gives the later stages besides its result."""

    result: LayerResult
    fitted: Mapping[str, FittedMap]  # maps fitted in this build (they can place other samples)
    pca: PcaResult
    x: np.ndarray
    graph: NeighbourGraph


def _graph(
    cache: Cache, x: np.ndarray, k: int, opts, seed: int, emb_key: str, layer: str
) -> tuple[NeighbourGraph, GraphQuality]:
    method = opts.neighbour_index
    if method == "auto":
        method = "approximate" if len(x) > opts.approximate_above else "exact"
    key = cache.key(
        "graphs",
        {"emb": emb_key, "layer": layer, "k": k, "metric": opts.metric, "method": method, "seed": seed},
        code_fingerprint("reportgen.neighbours"),
    )
    hit = cache.get_arrays("graphs", key)
    if hit is not None:
        arrays, meta = hit
        return NeighbourGraph(
            arrays["indices"].astype(np.int64), arrays["distances"], meta["metric"], meta["method"]
        ), GraphQuality(**meta["quality"])
    g, quality = build_graph(x, k, metric=opts.metric, method=method, seed=seed)
    cache.put_arrays(
        "graphs",
        key,
        {"indices": g.indices, "distances": g.distances},
        {"metric": g.metric, "method": g.method, "quality": dataclasses.asdict(quality)},
    )
    return g, quality


def analyse_layer(
    spec: ReportSpec,
    run: ModelRun,
    layer: str,
    samples: Samples,
    stages: Stages,
    cache: Cache,
    *,
    need_transform: bool,
    fits: Callable[[], None],
    audit: bool = False,
    twins: Callable[[], Any] = lambda: None,
) -> _LayerWork:
    """PCA, the neighbour graph, every reducer's map and every layer analysis of one layer
    (``audit``: the layer the data audit and the slices run on)."""
    opts = spec.report
    emb = run.embeddings
    x, nonfinite = cleaned(
        emb.layers[layer], cache.root / "scratch"
    )  # streamed: no copy of a clean memory-mapped layer
    notes = []
    if nonfinite:
        notes.append(
            f"{nonfinite} sample(s) had NaN or Inf values in this layer; they were set to 0 for the analyses (check the model)."
        )
    n, dim = x.shape
    reducers = [make_reducer(p, opts) for p in spec.reducers]
    with stages.stage("reduce: pca"):
        k_needed = max([spec.pca.n_components, opts.gallery_components, 2] + [r.pca_components(dim) for r in reducers])
        pca = fit_pca(x, k_needed)
    if pca.total_variance <= 0:
        notes.append(
            "All samples have identical embeddings in this layer (zero variance): PCA components and maps carry no information."
        )
    # one neighbour graph per layer, in the report's metric: every kNN analysis reads it, and the
    # reducers that can use it (UMAP), unless a comparison needs their own index to place others
    kq = max(opts.knn_k, opts.neighbours)
    shared = {r.name for r in reducers if not need_transform and r.graph_neighbours(n) > 0}
    kq = max([kq] + [r.graph_neighbours(n) for r in reducers if r.name in shared])
    audit = audit and opts.audit
    if audit:
        kq = max(kq, audit_k(n))
    with stages.stage("neighbours"):
        graph, graph_quality = _graph(cache, x, kq, opts, spec.seed, emb.key, layer)
    maps: dict[str, MapResult] = {}
    fitted: dict[str, FittedMap] = {}
    sampling = (
        _MapSample(spec, x, pca, samples.labels, len(samples.class_names), cache, emb.key, layer)
        if n > opts.map_cap
        else None
    )
    for r in reducers:
        if r.name != "pca" and pca.total_variance <= 0:
            notes.append(f"{r.name} skipped: every sample has the same embedding, so there is nothing to map.")
            continue
        with stages.stage(f"reduce: {r.name}"):
            use_graph = r.name in shared
            capped = sampling is not None and not r.fits_all
            key = (
                cache.key(
                    "maps",
                    {
                        "emb": emb.key,
                        "layer": layer,
                        "reducer": r.cache_parts(),
                        "seed": spec.seed,
                        "graph": use_graph,
                        "pca": r.pca_components(dim),
                        **({"cap": opts.map_cap, "place_all": opts.place_all} if capped else {}),
                    },
                    r.fingerprint(),
                )
                if r.name != "pca"
                else None
            )
            hit = cache.get_arrays("maps", key) if key and not need_transform else None
            if hit is not None:
                arrays, meta = hit
                maps[r.name] = MapResult(
                    r.name,
                    r.title,
                    arrays["coords"].astype(np.float32),
                    meta["params"],
                    tuple(meta["notes"]),
                    r.caption,
                    arrays.get("fitted_rows"),
                    meta.get("placement", ""),
                )
                continue
            if capped:
                fm, m = sampling.fit(r, use_graph)
            else:
                fm = call_fit(r, x, seed=spec.seed, graph=graph if use_graph else None, pca=pca)
                m = MapResult(
                    r.name, r.title, np.asarray(fm.coords, np.float32), dict(fm.params), tuple(fm.notes), r.caption
                )
            fitted[r.name] = fm
            maps[r.name] = m
            if key:
                fits()
                arrays = (
                    {"coords": m.coords}
                    if m.fitted_rows is None
                    else {"coords": m.coords, "fitted_rows": m.fitted_rows}
                )
                cache.put_arrays(
                    "maps", key, arrays, {"params": dict(m.params), "notes": list(m.notes), "placement": m.placement}
                )
    n_show = min(spec.pca.n_components, pca.k)
    twin = None
    if audit:
        with stages.stage("audit: image signatures"):
            twin = twins()
    base = LayerInput(
        model=run.model.name,
        layer=layer,
        x=x,
        samples=samples,
        pca=pca,
        n_components=n_show,
        graph=graph,
        graph_quality=graph_quality,
        maps=maps,
        options=opts,
        seed=spec.seed,
        cached=lambda kind, parts, compute: None,
        audit=audit,
        twins=twin,
    )
    findings: dict = {}
    metrics: dict = {}
    with stages.stage("analyse"):
        classes = [c for c in run_order(layer_analyses()) if c(opts, spec.seed).enabled(spec)]
        for cls in classes:
            analysis = cls(opts, spec.seed)
            code = cls.fingerprint()

            def cached(kind: str, parts: dict, compute: Callable[[], Any], code=code) -> Any:
                key = cache.key(kind, {"emb": emb.key, "layer": layer, **parts}, code)
                value = cache.get_json(kind, key)
                if value is None:
                    value = compute()
                    cache.put_json(kind, key, value)
                return value

            def cached_array(kind: str, parts: dict, compute: Callable[[], np.ndarray], code=code) -> np.ndarray:
                key = cache.key(kind, {"emb": emb.key, "layer": layer, **parts}, code)
                hit = cache.get_arrays(kind, key)
                if hit is not None:
                    return hit[0]["value"]
                value = compute()
                cache.put_arrays(kind, key, {"value": value}, {})
                return value

            with stages.stage(f"analyse: {cls.name}"):
                finding = analysis.run(dataclasses.replace(base, cached=cached, cached_array=cached_array), findings)
            if finding is not None:
                findings[cls.name] = finding
                metrics.update(analysis.metric_values(finding))
    order = [c.name for c in layer_analyses() if c.name in findings]  # report order
    result = LayerResult(
        model=run.model.name,
        layer=layer,
        reshape=emb.reshapes.get(layer) or "as computed",
        dim=int(dim),
        n=int(n),
        nonfinite_rows=nonfinite,
        notes=tuple(notes),
        maps=maps,
        findings={k: findings[k] for k in order},
        metrics=metrics,
    )
    return _LayerWork(result, fitted, pca, x, graph)


class _MapSample:
    """Above ``report.map_cap`` samples, maps other than PCA are fitted on a seeded stratified
    sample; the rest are placed by the fitted map's transform (``place_all``) or at the
    inverse-distance-weighted mean of their 5 nearest fitted samples in PCA space (for the density
    layer of all N). Shared by every reducer of the layer: one sample, one placement index."""

    def __init__(
        self,
        spec: ReportSpec,
        x,
        pca: PcaResult,
        labels: np.ndarray,
        n_classes: int,
        cache: Cache,
        emb_key: str,
        layer: str,
    ) -> None:
        from .datasets.selection import stratified_rows

        self.spec, self.x, self.pca, self.cache, self.emb_key, self.layer = spec, x, pca, cache, emb_key, layer
        self.rows = stratified_rows(labels, n_classes, spec.report.map_cap, spec.seed)
        self.rest = np.setdiff1d(np.arange(len(x)), self.rows)
        self._xs = None
        self._placement = None
        self._graphs: dict[int, NeighbourGraph] = {}

    @property
    def xs(self) -> np.ndarray:
        if self._xs is None:
            self._xs = gather_rows(self.x, self.rows)
        return self._xs

    def fit(self, r, use_graph: bool) -> tuple[FittedMap, MapResult]:
        opts, n, m = self.spec.report, len(self.x), len(self.rows)
        graph = None
        if use_graph:
            k = r.graph_neighbours(m)
            if k not in self._graphs:
                self._graphs[k], _ = _graph(
                    self.cache, self.xs, k, opts, self.spec.seed, f"{self.emb_key}/sample{m}", self.layer
                )
            graph = self._graphs[k]
        sub = dataclasses.replace(self.pca, scores=self.pca.scores[self.rows])
        fm = call_fit(r, self.xs, seed=self.spec.seed, graph=graph, pca=sub)
        coords = np.empty((n, 2), np.float32)
        coords[self.rows] = fm.coords
        if opts.place_all and fm.can_transform:
            for s in range(0, len(self.rest), 20_000):
                part = self.rest[s : s + 20_000]
                coords[part] = fm.transform(gather_rows(self.x, part))
            placement = "transform"
        else:
            if self._placement is None:
                z = self.pca.scores[:, : min(self.pca.k, 32)]
                self._placement = nearest_fitted(z, self.rows, self.rest)
            pos, w = self._placement
            coords[self.rest] = (fm.coords[pos] * w[:, :, None]).sum(1)
            placement = "nearest fitted samples"
        how = (
            "placed by the fitted map's transform"
            if placement == "transform"
            else "placed at the weighted mean of their 5 nearest fitted samples (PCA space), for the density layer only"
        )
        note = f"fitted on a stratified sample of {m:,} of {n:,} samples (seed {self.spec.seed}, report.map_cap); the other {n - m:,} are {how}"
        return fm, MapResult(
            r.name, r.title, coords, dict(fm.params), (note, *fm.notes), r.caption, self.rows, placement
        )


# ----------------------------------------------------------------------------- build


class _FigureCache:
    """The render's figure memo, on disk under the cache (kind ``figures``)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def get(self, key: str) -> bytes | None:
        return self.cache.get_bytes("figures", key)

    def put(self, key: str, data: bytes) -> None:
        self.cache.put_bytes("figures", key, data)


def build(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    modules: dict[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    write: bool = True,
    output_dir: str | os.PathLike | None = None,
    baseline: str | os.PathLike | None = None,
    hooks: ProcessHooks = ProcessHooks(),
) -> BuildResult:
    """Run every stage; write ``report.html``, ``summary.json``, ``run.json``, ``figures/`` (and
    ``checks.xml``) atomically. Failed checks do not raise: see ``BuildResult.checks_failed`` (the
    CLI exits 3). Paths may be ``str`` or ``os.PathLike``."""
    stages = Stages(hooks)
    out_dir = as_path(output_dir) or spec.output.dir
    cache_root = as_path(cache_dir) or spec.cache_dir
    baseline_path = as_path(baseline)
    if write:
        check_output_dir(out_dir)
    ds, sel, runs, loaded = _extract(
        spec,
        use_cache=use_cache,
        cache_dir=cache_root,
        modules=modules,
        max_samples=max_samples,
        progress=progress,
        stages=stages,
    )
    # every model must describe the same rows (a sample unreadable for one is unreadable for all)
    base = runs[0].embeddings
    for r in runs[1:]:
        if r.embeddings.ids != base.ids:
            raise ReportgenError("models saw different samples; this should not happen, please report it")
    labels = np.asarray(base.labels)
    if len(labels) < 2 or len(np.unique(labels)) < 2:
        raise DataError(
            f"dataset: only {len(labels)} readable sample(s) in {len(np.unique(labels))} class(es) remain after skipping bad images; a report needs two classes"
        )
    with stages.stage("analyse: image statistics"):
        samples = Samples(
            ids=base.ids,
            labels=labels,
            class_names=ds.class_names,
            thumbnails=base.thumbnails,
            image_stats=image_statistics(base.thumbnails),
            hashes=base.hashes,
        )
    cache = Cache(cache_root, enabled=use_cache)
    need_transform = len(runs) > 1 or bool(spec.extra_datasets)
    fit_count = [0]

    def count_fit() -> None:
        fit_count[0] += 1

    work: dict[tuple[str, str], _LayerWork] = {}
    models = []
    twin_data = _twin_data(spec, ds, base)
    for run in runs:
        done = []
        audit_layer = _audit_layer(spec, run)
        for layer in run.embeddings.layers:
            w = analyse_layer(
                spec,
                run,
                layer,
                samples,
                stages,
                cache,
                need_transform=need_transform,
                fits=count_fit,
                audit=layer == audit_layer,
                twins=twin_data,
            )
            work[(run.model.name, layer)] = w
            done.append(w.result)
        models.append(
            ModelResult(run.model, run.embeddings.key, run.embeddings.origin, run.embeddings.forward_calls, tuple(done))
        )
    notes = []
    if base.bad:
        notes.append(f"{len(base.bad)} image(s) could not be read and were skipped (listed under Data).")
    extra = _extra_datasets(
        spec, runs, loaded, cache_root, use_cache=use_cache, max_samples=max_samples, progress=progress, stages=stages
    )
    build_input = BuildInput(
        runs=runs,
        layers={k: w.result for k, w in work.items()},
        x=lambda m, l: work[(m, l)].x,
        fitted={k: w.fitted for k, w in work.items()},
        pca={k: w.pca for k, w in work.items()},
        extra=extra,
        samples=samples,
        dataset_name=ds.name,
        reference=spec.reference,
        options=spec.report,
        seed=spec.seed,
        graphs={k: w.graph for k, w in work.items()},
        twins=twin_data,
    )
    build_findings: dict = {}
    build_metrics: dict = {}
    for cls in build_analyses():
        analysis = cls(spec.report, spec.seed)
        if not analysis.enabled(spec):
            continue
        with stages.stage(cls.title.lower()):
            finding = analysis.run(build_input)
        if finding is not None:
            build_findings[cls.name] = finding
            for (m, l), values in analysis.layer_metrics(finding).items():
                build_metrics.setdefault(m, {}).setdefault(l, {}).update(values)
    checks: tuple = ()
    if spec.checks:
        with stages.stage("checks"):
            ref = read_summary(baseline_path, what="--baseline") if baseline_path else None
            checks = tuple(evaluate(metrics_view(models, build_metrics), spec.checks, baseline=ref))
    headlines = _headlines(spec, models, build_findings, checks, samples)
    dataset = DatasetInfo(
        ds.name,
        ds.kind,
        ds.fingerprint,
        ds.class_names,
        sel.method,
        sel.used_per_class,
        sel.total_per_class,
        ds.has_images,
    )

    def stats() -> RunStats:
        return RunStats(
            dict(stages.timings),
            dict(stages.rss),
            sum(r.embeddings.forward_calls for r in runs)
            + sum(r.embeddings.forward_calls for _, xr in extra for r in xr),
            fit_count[0],
            dict(cache.computed),
            dict(cache.reused),
        )

    report = ReportData(
        spec=spec,
        dataset=dataset,
        samples=samples,
        models=tuple(models),
        build_findings=build_findings,
        bad=base.bad,
        notes=tuple(notes),
        checks=checks,
        stats=stats(),
        versions=library_versions(),
        headlines=headlines,
        build_metrics=build_metrics,
    )
    if not write:
        return BuildResult(report, None, None)
    with stages.stage("render"):
        rendered = render_report(report, figure_cache=_FigureCache(cache))
    summary = summary_dict(report, rendered.stats)
    final = stats()
    run_info = {
        "html_bytes": rendered.stats.html_bytes,
        "section_bytes": dict(rendered.stats.section_bytes),
        "timings_s": dict(final.timings),
        "peak_rss_mb": dict(final.peak_rss_mb),
        "forward_calls": final.forward_calls,
        "reducer_fits": final.reducer_fits,
        "from_cache": {m.model.name: m.origin == "cache" for m in models},
        "computed": dict(final.computed),
        "reused": dict(final.reused),
    }
    with stages.stage("write"):
        write_report(
            out_dir,
            html=rendered.html,
            summary=summary,
            run=run_info,
            figures=rendered.figures if spec.output.figures else None,
            checks_xml=junit_xml(list(checks)) if spec.checks else None,
        )
    return BuildResult(dataclasses.replace(report, stats=stats()), rendered.stats, out_dir)


def _audit_layer(spec: ReportSpec, run: ModelRun) -> str | None:
    """The layer the data audit and the slices run on: report.audit_layer, else the deepest."""
    layers = list(run.embeddings.layers)
    if not layers:
        return None
    if spec.report.audit_layer is not None:
        if spec.report.audit_layer not in layers:
            hint = difflib.get_close_matches(spec.report.audit_layer, layers, n=1)
            raise SpecError(
                f"report.audit_layer: {spec.report.audit_layer!r} is not a layer of {run.model.name}"
                + (f"; did you mean {hint[0]!r}?" if hint else f" ({', '.join(layers)})")
            )
        return spec.report.audit_layer
    index = run.embeddings.manifest.get("layer_index") or {}
    return max(layers, key=lambda l: (index.get(l, -1), layers.index(l)))


def _twin_data(spec: ReportSpec, ds: Dataset, emb) -> Callable[[], Any]:
    """The reference dataset's image signatures and near-duplicate calibration, made on first use
    (once for every model) and only for a dataset with images."""
    memo: list = []

    def get():
        if not memo:
            from .twins import twin_data

            ok = ds.has_images and emb.thumbnails is not None and len(emb.indices) > 1
            memo.append(
                twin_data(ds.read, emb.indices, emb.thumbnails, spec.report.thumbnail_px, seed=spec.seed)
                if ok
                else None
            )
        return memo[0]

    return get


SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


def _headlines(spec: ReportSpec, models, build_findings: Mapping, checks, samples: Samples) -> tuple:
    """Every analysis's findings and every failed check, ranked: severity, then size, then id."""
    from .results import Headline

    out = []
    for m in models:
        for lr in m.layers:
            for name, finding in lr.findings.items():
                cls = ANALYSES.get(name)
                if cls is not None:
                    out += cls(spec.report, spec.seed).headlines(
                        finding, Where(lr.model, lr.layer, f"l-{lr.slug}-{name}", samples)
                    )
    for name, finding in build_findings.items():
        cls = ANALYSES.get(name)
        if cls is not None:
            out += cls(spec.report, spec.seed).headlines(finding, Where("", "", name, samples))
    for c in checks:
        if not c.passed:
            out.append(
                Headline(
                    f"check/{c.name}/{c.model}/{c.layer}",
                    "high",
                    f"Check {c.name!r} failed: {c.message}.",
                    "#checks",
                    1.0,
                )
            )
    return tuple(sorted(out, key=lambda h: (SEVERITY_RANK.get(h.severity, 9), -h.value, h.id)))


def _extra_datasets(
    spec: ReportSpec,
    runs: tuple[ModelRun, ...],
    loaded: dict[str, LoadedModel],
    cache_root: Path | None,
    *,
    use_cache: bool,
    max_samples: int | None,
    progress: bool,
    stages: Stages,
) -> tuple[tuple[str, tuple[ModelRun, ...]], ...]:
    """The compared datasets (``datasets:`` after the first) through the same models (those loaded
    for the reference dataset: the quick cache path is off when datasets are compared)."""
    if not spec.extra_datasets:
        return ()
    store = EmbeddingStore(cache_root)
    out = []
    for dspec in spec.extra_datasets:
        with stages.stage("data: load (compared)"):
            dx = load_dataset(dspec)
            sx = select_samples(dx, limit=dspec.limit, method=dspec.sample, seed=spec.seed, max_samples=max_samples)
        xruns = []
        for mspec, run in zip(spec.models, runs):
            with stages.stage(f"extract: {mspec.name} (compared)"):
                if spec.execution.engine == "ray":
                    emb = _embed_on_ray(spec, mspec, dspec, dx, sx, store, use_cache=use_cache, progress=progress)
                else:
                    emb = _embed(
                        spec,
                        mspec,
                        loaded[mspec.name],
                        dx,
                        sx,
                        store,
                        use_cache=use_cache,
                        progress=progress,
                        on_bad_image=dspec.on_bad_image,
                    )
            xruns.append(ModelRun(run.model, emb))
        out.append((dspec.name or f"{dx.name} ({dspec.kind})", tuple(xruns)))
    return tuple(out)
