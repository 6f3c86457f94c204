"""Pipeline: ``build(spec)`` -> ``BuildResult``; the one place that knows the order of stages.

spec -> data -> models -> extract (cached) -> reduce -> analyse -> figures -> render -> write.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import os
import platform
import resource
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .analyse import (
    NeighbourGraph,
    centroid_axis,
    class_means,
    component_ends,
    correlations,
    eta_squared,
    hard_samples,
    image_statistics,
    knn_accuracy,
    linear_probe_accuracy,
    neighbour_graph,
    neighbour_queries,
    outliers,
    sanitize,
    silhouette,
    trust_and_continuity,
)
from .data import Dataset, Selection, load_dataset, select_samples
from .errors import DataError, OutputError, ReportgenError, SpecError
from .extract import Shard, extract_shard, resolve_layers
from .models import LoadedModel, load_model
from .reduce import (
    PcaResult,
    Projection,
    fit_pca,
    pca_projection,
    run_pacmap,
    run_tsne,
    run_umap,
)
from .spec import ReportSpec
from .store import (
    EmbeddingStore,
    ProjectionCache,
    StoredEmbeddings,
    content_key,
    remove_stale_temps,
    slug,
    temp_name,
)

log = logging.getLogger(__name__)

SHARD_SIZE = 8192
REPORT_MARKER = "reportgen-report"


# ----------------------------------------------------------------------------- results


@dataclass
class LayerResult:
    model: str
    layer: str
    reshape: str
    dim: int
    pca: PcaResult
    projections: dict[str, Projection]
    graph: Any
    knn_accuracy: float
    knn_k: int
    hard: list
    outliers: np.ndarray
    ends: list
    eta2: np.ndarray
    class_means: np.ndarray
    stat_corr: np.ndarray  # (4, k)
    queries: list[int]
    axes: list
    trust: dict[str, dict]
    nonfinite_rows: int
    pca_full: PcaResult | None = None  # all components computed (t-SNE input frame), for transforms
    probe: tuple = (None, 0)  # (accuracy, samples)
    silhouette: tuple = (None, 0)
    notes: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"{slug(self.model)}--{slug(self.layer)}"


@dataclass
class ModelRun:
    model: LoadedModel
    stored: StoredEmbeddings
    forward_calls: int
    from_cache: bool
    layers: list[LayerResult] = field(default_factory=list)


@dataclass
class BuildResult:
    spec: ReportSpec
    spec_text: str
    dataset: Dataset
    selection: Selection
    runs: list[ModelRun]
    timings: dict[str, float]
    peak_rss_mb: dict[str, float]
    labels: np.ndarray  # labels of the rows used (same for every model)
    ids: tuple[str, ...]
    thumbnails: np.ndarray
    image_stats: np.ndarray
    bad: tuple[tuple[str, str], ...]
    notes: list[str]
    output_dir: Path | None = None
    html_bytes: int = 0
    section_bytes: dict[str, int] = field(default_factory=dict)
    reductions: list[str] = field(default_factory=list)
    checks: list = field(default_factory=list)  # CheckResult
    comparison: Any = None  # compare.Comparison when several models
    shifts: list = field(default_factory=list)  # compare.DatasetShift per extra dataset, model and layer
    reducer_fits: int = 0  # t-SNE/UMAP/PaCMAP fits run (0 when every map came from the cache)
    use_cache: bool = True
    cache_dir: Path | None = None

    @property
    def checks_failed(self) -> list:
        return [c for c in self.checks if not c.passed]

    @property
    def forward_calls(self) -> int:
        return sum(r.forward_calls for r in self.runs)


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


def _reset_peak_rss() -> bool:
    """Restart this process's VmHWM from the current RSS (Linux >= 4.0), so a stage's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS ratchets up stage by stage)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Stages:
    """Wall time and peak RSS per stage. Peaks are per stage (the high-water mark is reset when a
    stage starts, where Linux allows it) and nest: an outer stage's peak covers its inner stages."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self._open: list[list] = []  # [name, running peak] of the stages in progress

    @contextlib.contextmanager
    def stage(self, name: str):
        now = peak_rss_mb()
        for entry in self._open:
            entry[1] = max(entry[1], now)
        _reset_peak_rss()
        entry = [name, 0.0]
        self._open.append(entry)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            peak = max(entry[1], peak_rss_mb())
            _release_freed_memory()
            self._open.remove(entry)
            for outer in self._open:
                outer[1] = max(outer[1], peak)
            self.timings[name] = self.timings.get(name, 0.0) + dt
            self.rss[name] = max(self.rss.get(name, 0.0), peak)
            log.info("stage %-28s %7.2f s  peak RSS %6.0f MB", name, dt, peak)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "reportgen": __version__}
    for pkg in ("numpy", "torch", "timm", "scikit-learn", "openTSNE", "umap-learn", "matplotlib", "Pillow", "Jinja2", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- extraction


def _embed(spec: ReportSpec, mspec, loaded: LoadedModel, ds: Dataset, sel: Selection, store: EmbeddingStore, *, use_cache: bool, progress: bool,
           on_bad_image: str | None = None) -> tuple[StoredEmbeddings, int, bool]:
    on_bad_image = on_bad_image or spec.dataset.on_bad_image
    layers = resolve_layers(loaded.module, mspec.layers)
    key = content_key({
        "v": 1,
        "arch": loaded.arch, "weights": loaded.weights_sha256, "preprocess": loaded.preprocess.as_dict(),
        "layers": [(l.name, l.reshape) for l in layers], "max_features": mspec.max_features,
        "dataset": ds.fingerprint, "selection": hashlib.sha256(sel.indices.tobytes()).hexdigest(),
        "thumb": spec.report.thumbnail_px, "on_bad_image": on_bad_image,
    })
    if use_cache:
        hit = store.load(key)
        if hit is not None:
            log.info("model %s: embeddings from cache %s", loaded.name, hit.path)
            return hit, 0, True
    writer = store.writer(key, len(sel.indices), spec.report.thumbnail_px)
    calls = 0
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sel.indices), desc=f"extract {loaded.name}", unit="img", disable=None if progress else True, leave=False, file=sys.stderr)
        try:
            for start in range(0, len(sel.indices), SHARD_SIZE):
                part = sel.indices[start : start + SHARD_SIZE]
                shard: Shard = extract_shard(
                    loaded, ds, part, layers, batch_size=mspec.batch_size, thumbnail_px=spec.report.thumbnail_px,
                    on_bad_image=on_bad_image, max_features=mspec.max_features, num_workers=mspec.num_workers, jit=mspec.jit,
                    progress=bar.update,
                )
                calls += shard.forward_calls
                writer.append(shard, ds.labels[shard.indices])
                del shard  # one shard in memory at a time
        finally:
            bar.close()
        if writer.count == 0:
            raise DataError(f"dataset: none of the {len(sel.indices)} selected images could be read (first: {writer.bad[0][1] if writer.bad else '?'})")
        ids = [ds.ids[int(i)] for i in np.concatenate(writer.indices)]
        bad = [(ds.ids[i], r) for i, r in writer.bad]
        manifest = {
            "model": {"name": loaded.name, "arch": loaded.arch, "source": loaded.source, "weights_sha256": loaded.weights_sha256},
            "dataset": {"name": ds.name, "kind": ds.kind, "fingerprint": ds.fingerprint, "class_names": list(ds.class_names)},
            "preprocess": loaded.preprocess.as_dict(), "thumbnail_px": spec.report.thumbnail_px,
        }
        writer.commit(ids, bad, manifest)
    except BaseException:
        writer.abort()
        raise
    stored = store.load(key, verify=False)
    if stored is None:
        raise ReportgenError(f"cache: entry {key} vanished right after it was written; is another process clearing {store.dir}?")
    return stored, calls, False


# ----------------------------------------------------------------------------- analysis


def _fit_reducer(r, x: np.ndarray, pca_full: PcaResult, seed: int, graph: NeighbourGraph | None) -> Projection:
    if r.method == "pca":
        return pca_projection(pca_full)
    if r.method == "tsne":
        inp = pca_full.scores[:, : r.pca_components] if r.pca_components and r.pca_components < x.shape[1] else x
        return run_tsne(inp, r, seed=seed)
    if r.method == "umap":
        return run_umap(x, r, seed=seed, graph=graph)
    return run_pacmap(x, r, seed=seed)


def _resolve_reducers(spec: ReportSpec) -> list:
    """Reducer specs with unset metrics filled in from the report's, so cache keys name what was run."""
    return [r.model_copy(update={"metric": spec.report.metric}) if getattr(r, "metric", "") is None else r for r in spec.reducers]


def _analyse_layer(spec: ReportSpec, model_name: str, layer: str, reshape: str, emb: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], stats: np.ndarray, stages: _Stages,
                   *, cache: ProjectionCache | None = None, emb_key: str = "", counter: dict | None = None, need_transform: bool = False) -> LayerResult:
    opts = spec.report
    x, nonfinite = sanitize(emb)
    notes = []
    if nonfinite:
        notes.append(f"{nonfinite} sample(s) had NaN or Inf values in this layer; they were set to 0 for the analyses (check the model).")
    n = len(x)
    with stages.stage("reduce: pca"):
        pca_spec = spec.pca
        k_needed = max(pca_spec.n_components, opts.gallery_components, 2)
        tsne_spec = next((r for r in spec.reducers if r.method == "tsne"), None)
        if tsne_spec is not None and tsne_spec.pca_components:
            k_needed = max(k_needed, tsne_spec.pca_components)
        pca_full = fit_pca(x, k_needed)
    if pca_full.total_variance <= 0:
        notes.append("All samples have identical embeddings in this layer (zero variance): PCA components and maps carry no information.")
    k_show = min(pca_spec.n_components, pca_full.k)
    reducers = _resolve_reducers(spec)
    # one exact neighbour graph per layer, in the report's metric: every kNN analysis reads it, and
    # UMAP too (when its metric matches and no comparison needs umap's own index)
    kq = max(opts.knn_k, opts.neighbours)
    share = [r for r in reducers if r.method == "umap" and r.metric == opts.metric and not need_transform]
    if share:
        kq = max(kq, max(min(r.n_neighbors, n - 1) for r in share) - 1)
    with stages.stage("neighbours"):
        graph = neighbour_graph(x, kq, metric=opts.metric)
    projections: dict[str, Projection] = {}
    for r in reducers:
        if r.method != "pca" and pca_full.total_variance <= 0:
            notes.append(f"{r.method} skipped: every sample has the same embedding, so there is nothing to map.")
            continue
        with stages.stage(f"reduce: {r.method}"):
            shared = r in share
            key = cache.key({"emb": emb_key, "layer": layer, "reducer": r.model_dump(mode="json"), "seed": spec.seed, "graph": shared}) if cache and r.method != "pca" else None
            hit = cache.load(key) if key else None
            if hit is not None:
                projections[r.method] = Projection(r.method, hit[0], hit[1], hit[2], 0.0)
                continue
            projections[r.method] = proj = _fit_reducer(r, x, pca_full, spec.seed, graph if shared else None)
            if r.method != "pca" and counter is not None:
                counter["fits"] = counter.get("fits", 0) + 1
            if key:
                cache.save(key, proj.coords, proj.params, proj.notes)
    with stages.stage("analyse"):
        k_eff = min(opts.knn_k, graph.indices.shape[1])
        acc = knn_accuracy(graph, labels, k_eff)
        hard = hard_samples(graph, labels, k_eff, opts.hard_samples)
        outl = outliers(graph, k_eff, min(opts.hard_samples, n))
        scores = pca_full.scores[:, :k_show]
        ends = component_ends(pca_full, labels, class_names, components=min(opts.gallery_components, k_show), size=min(opts.gallery_size, max(1, n // 2)))
        eta = eta_squared(scores, labels)
        means = class_means(scores, labels, len(class_names))
        corr = correlations(stats, scores)
        queries = neighbour_queries(graph, labels, x, hard, n_classes=len(class_names))
        axes = [centroid_axis(x, labels, list(class_names), a, b) for a, b in opts.axes]
        if n < 6:  # trustworthiness needs k < N/2 neighbours
            trust = {name: {"trustworthiness": None, "continuity": None, "samples": n} for name in projections}
        else:
            tc = trust_and_continuity(x, {name: p.coords for name, p in projections.items()}, k=min(10, max(1, n // 2 - 1)),
                                      cap=opts.trustworthiness_cap, seed=spec.seed, metric=opts.metric)
            trust = {name: {"trustworthiness": t, "continuity": c, "samples": used} for name, (t, c, used) in tc.items()}
        probe = (None, 0)
        if opts.linear_probe:  # the costliest analysis: cached by content like the maps
            pkey = cache.key({"emb": emb_key, "layer": layer, "probe": opts.probe_cap, "seed": spec.seed}) if cache else None
            cached = cache.load_value(pkey) if pkey else None
            probe = tuple(cached) if cached is not None else linear_probe_accuracy(x, labels, cap=opts.probe_cap, seed=spec.seed)
            if pkey and cached is None:
                cache.save_value(pkey, list(probe))
        sil = silhouette(x, labels, cap=opts.trustworthiness_cap, seed=spec.seed, metric=opts.metric)
    pca_show = PcaResult(pca_full.mean, pca_full.components[:k_show], pca_full.scores[:, :k_show], pca_full.explained_variance[:k_show], pca_full.explained_variance_ratio[:k_show], pca_full.eigenvalues, pca_full.total_variance)
    return LayerResult(
        model=model_name, layer=layer, reshape=reshape, dim=int(x.shape[1]), pca=pca_show, projections=projections, graph=graph,
        knn_accuracy=acc, knn_k=k_eff, hard=hard, outliers=outl, ends=ends, eta2=eta, class_means=means, stat_corr=corr,
        queries=queries, axes=axes, trust=trust, nonfinite_rows=nonfinite, notes=notes, probe=probe, silhouette=sil, pca_full=pca_full,
    )


# ----------------------------------------------------------------------------- build


def check_axes(spec: ReportSpec, ds: Dataset) -> None:
    """Class names in report.axes must exist: checked before any model runs."""
    names = ds.class_names
    for i, (a, b) in enumerate(spec.report.axes):
        for c in (a, b):
            if c not in names:
                hint = difflib.get_close_matches(c, names, n=1)
                more = f"; did you mean {hint[0]!r}?" if hint else f" (classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
                raise SpecError(f"report.axes[{i}]: class {c!r} is not in the dataset{more}")
        if a == b:
            raise SpecError(f"report.axes[{i}]: both ends are {a!r}; name two different classes")



def _precomputed_run(spec: ReportSpec, ds: Dataset, sel: Selection) -> ModelRun:
    """Embeddings given as input (vectors, a projector folder): no model, no forward pass."""
    from .models import Preprocess, make_thumbnail

    idx = sel.indices
    t = spec.report.thumbnail_px
    thumbs = np.stack([make_thumbnail(ds.read(int(i)), t) for i in idx])
    layers = {name: np.asarray(v[idx], np.float32) for name, v in ds.vectors.items()}
    digest = hashlib.sha256(ds.fingerprint.encode()).hexdigest()
    loaded = LoadedModel(name="embeddings", module=None, arch="precomputed", source=ds.source, weights_sha256=digest,
                         preprocess=Preprocess(0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "none", 1.0), device="none")
    stored = StoredEmbeddings(key="precomputed", path=Path(ds.source), ids=tuple(ds.ids[int(i)] for i in idx), indices=idx,
                              labels=ds.labels[idx], layers=layers, reshapes={k: "precomputed" for k in layers}, thumbnails=thumbs, bad=(), manifest={})
    return ModelRun(loaded, stored, 0, False)


def extract_embeddings(
    spec: ReportSpec,
    *,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    modules: dict[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    stages: "_Stages | None" = None,
) -> tuple[Dataset, Selection, list[ModelRun]]:
    """The data, model and extraction stages: every model's embeddings, from the cache or computed."""
    stages = stages or _Stages()
    modules = modules or {}
    with stages.stage("data: load"):
        ds = load_dataset(spec.dataset)
        sel = select_samples(ds, limit=spec.dataset.limit, method=spec.dataset.sample, seed=spec.seed, max_samples=max_samples)
        check_axes(spec, ds)
    if ds.vectors is not None:
        with stages.stage("extract: precomputed"):
            return ds, sel, [_precomputed_run(spec, ds, sel)]
    store = EmbeddingStore(cache_dir or spec.cache_dir)
    runs: list[ModelRun] = []
    for mspec in spec.models:
        quick = None if mspec.name in modules else _quick_key(spec, mspec, ds, sel)
        if use_cache and quick and not spec.extra_datasets:
            with stages.stage(f"extract: {mspec.name}"):
                hit = store.load_alias(quick)
            if hit is not None:  # the model need not even be built
                log.info("model %s: embeddings from cache %s (model not loaded)", mspec.name, hit.path)
                runs.append(ModelRun(_model_from_manifest(mspec, hit.manifest), hit, 0, True))
                continue
        with stages.stage(f"model: load {mspec.name}"):
            loaded = load_model(mspec, seed=spec.seed, module=modules.get(mspec.name))
        with stages.stage(f"extract: {mspec.name}"):
            stored, calls, hit = _embed(spec, mspec, loaded, ds, sel, store, use_cache=use_cache, progress=progress)
            if quick:
                store.save_alias(quick, stored.key)
        runs.append(ModelRun(loaded, stored, calls, hit))
    return ds, sel, runs


def _quick_key(spec: ReportSpec, mspec, ds: Dataset, sel: Selection) -> str | None:
    """A cache key from the spec alone (architecture, weights file hash, preprocessing options, layers,
    data), so a rebuild finds its embeddings without building the model. None for factories and
    objects, whose identity only shows once they are built."""
    from importlib import metadata

    from .models import PACKAGED_WEIGHTS
    from .store import file_sha256

    if mspec.factory or mspec.pretrained or not (mspec.timm or mspec.pixels):
        return None  # hub weights can change under the same name: always load those
    parts = {"v": 1, "model": mspec.model_dump(mode="json", exclude={"name", "device", "batch_size", "num_workers", "checkpoint", "channels_last", "jit"}),
             "seed": spec.seed, "dataset": ds.fingerprint, "selection": hashlib.sha256(sel.indices.tobytes()).hexdigest(),
             "thumb": spec.report.thumbnail_px, "on_bad_image": spec.dataset.on_bad_image}
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


def _model_from_manifest(mspec, manifest: dict) -> LoadedModel:
    from .models import Preprocess

    m, p = manifest["model"], manifest["preprocess"]
    prep = Preprocess(p["input_size"], tuple(p["mean"]), tuple(p["std"]), p["interpolation"], p["crop_pct"])
    return LoadedModel(name=mspec.name, module=None, arch=m["arch"], source=m["source"], weights_sha256=m["weights_sha256"],
                       preprocess=prep, device="not loaded (embeddings from the cache)")


def build(
    spec: ReportSpec,
    *,
    spec_text: str = "",
    use_cache: bool = True,
    cache_dir: Path | None = None,
    modules: dict[str, Any] | None = None,
    max_samples: int | None = None,
    progress: bool = True,
    write: bool = True,
    output_dir: Path | None = None,
    baseline: Path | None = None,
) -> BuildResult:
    """Run every stage; write ``report.html``, ``summary.json``, ``figures/`` (and ``checks.xml``) atomically.

    Failed checks do not raise: see ``BuildResult.checks_failed`` (the CLI exits 3).
    """
    stages = _Stages()
    out_dir = Path(output_dir or spec.output.dir)
    if write:
        check_output_dir(out_dir)
    ds, sel, runs = extract_embeddings(spec, use_cache=use_cache, cache_dir=cache_dir, modules=modules, max_samples=max_samples, progress=progress, stages=stages)
    # every model must describe the same rows (a sample unreadable for one is unreadable for all)
    base = runs[0].stored
    for r in runs[1:]:
        if r.stored.ids != base.ids:
            raise ReportgenError("models saw different samples; this should not happen, please report it")
    labels = np.asarray(base.labels)
    present = np.unique(labels)
    if len(labels) < 2 or len(present) < 2:
        raise DataError(f"dataset: only {len(labels)} readable sample(s) in {len(present)} class(es) remain after skipping bad images; a report needs two classes")
    with stages.stage("analyse: image statistics"):
        stats = image_statistics(base.thumbnails)
    # cached maps carry no fitted reducer; comparisons need one to place other models or datasets
    pcache = ProjectionCache(cache_dir or spec.cache_dir) if use_cache and len(runs) == 1 and not spec.extra_datasets and runs[0].stored.key != "precomputed" else None
    counter: dict = {}
    for run in runs:
        for layer, emb in run.stored.layers.items():
            run.layers.append(_analyse_layer(spec, run.model.name, layer, run.stored.reshapes.get(layer) or "?", emb, labels, ds.class_names, stats, stages,
                                             cache=pcache, emb_key=run.stored.key, counter=counter, need_transform=len(runs) > 1 or bool(spec.extra_datasets)))
    notes = []
    if base.bad:
        notes.append(f"{len(base.bad)} image(s) could not be read and were skipped (listed under Data).")
    comparison = None
    if len(runs) > 1:
        from .compare import compare_models

        with stages.stage("compare models"):
            tsne = next((r for r in spec.reducers if r.method == "tsne"), None)
            comparison = compare_models(runs, spec.reference, labels, len(ds.class_names), seed=spec.seed,
                                        tsne_components=tsne.pca_components if tsne else 0)
    shifts = []
    if spec.extra_datasets:
        from .compare import compare_datasets

        extra = []
        store = EmbeddingStore(cache_dir or spec.cache_dir)
        for dspec in spec.extra_datasets:
            with stages.stage("data: load (compared)"):
                dx = load_dataset(dspec)
                sx = select_samples(dx, limit=dspec.limit, method=dspec.sample, seed=spec.seed, max_samples=max_samples)
            xruns = []
            for mspec, run in zip(spec.models, runs):
                with stages.stage(f"extract: {mspec.name} (compared)"):
                    stored, calls, hit = _embed(spec, mspec, run.model, dx, sx, store, use_cache=use_cache, progress=progress, on_bad_image=dspec.on_bad_image)
                xruns.append(ModelRun(run.model, stored, calls, hit))
            extra.append((dspec.name or f"{dx.name} ({dspec.kind})", xruns))
        with stages.stage("compare datasets"):
            tsne = next((r for r in spec.reducers if r.method == "tsne"), None)
            shifts = compare_datasets(runs, extra, seed=spec.seed, tsne_components=tsne.pca_components if tsne else 0)
    result = BuildResult(
        spec=spec, spec_text=spec_text, dataset=ds, selection=sel, runs=runs, shifts=shifts, timings=stages.timings, peak_rss_mb=stages.rss,
        labels=labels, ids=base.ids, thumbnails=base.thumbnails, image_stats=stats, bad=base.bad, notes=notes, comparison=comparison,
        reducer_fits=counter.get("fits", 0), use_cache=use_cache, cache_dir=cache_dir or spec.cache_dir,
    )
    if spec.checks:
        from .checks import evaluate, read_summary
        from .summary import summary_dict

        with stages.stage("checks"):
            base = read_summary(baseline, what="--baseline") if baseline else None
            result.checks = evaluate(summary_dict(result), spec.checks, baseline=base)
    if write:
        from .render import write_report

        with stages.stage("render + write"):
            write_report(result, out_dir)
        result.output_dir = out_dir
    return result


# ----------------------------------------------------------------------------- output


def check_output_dir(out: Path) -> None:
    """Fail early (before any work) if the output folder cannot be written or is not ours."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output.dir: {out} exists and is a file; choose a folder")
    if out.exists() and any(out.iterdir()) and not (out / ".reportgen").exists():
        raise OutputError(f"output.dir: {out} exists, is not empty and is not a reportgen report; choose a new or empty folder (it is replaced whole on each build)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(f"output.dir: cannot write in {parent} ({exc.strerror}); choose a writable folder") from None


@contextlib.contextmanager
def atomic_dir(out: Path):
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` whole, else it is removed."""
    out = Path(out)
    parent = out.resolve().parent
    remove_stale_temps(parent, out.name)
    tmp = parent / temp_name(out.name)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / ".reportgen").write_text(REPORT_MARKER + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = parent / temp_name(out.name).replace(".tmp-", ".old-")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


