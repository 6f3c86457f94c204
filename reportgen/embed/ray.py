"""The Ray engine: a job's shards run on a Ray Data actor pool, one model replica per worker (one per
GPU where the cluster has GPUs), each shard durable in the store the moment it is done.

    execution: {engine: ray, address: auto}      # or --engine ray --address ray://head:10001

Every worker reads the dataset and writes shards itself, so the dataset's files and the cache
folder must be on a filesystem all nodes see (an NFS or similar mount at the same path). Shards
live in ``<cache>/shards/<job key>/``; when all are there they are assembled like the local
engine's (``embed.assembly``), under the same key, so either engine's embeddings serve the other's
builds. A re-run after a failure (a dead worker, an interrupted driver) computes only the shards
that are missing. Ray's own actor restarts and task retries handle workers that die mid-job; no
scheduler is written here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..datasets import DatasetParams, load_dataset
from ..errors import DataError, SpecError
from ..models import load_model
from ..options import ExecutionSpec, ModelSpec
from ..results import Embeddings
from ..store.embeddings import EmbeddingStore
from ..store.files import temp_name
from .assembly import ShardRun, describe
from .cluster import Connection, RayError, preflight, user_error
from .extractor import Extractor, Shard
from .identity import EmbedRequest, embedding_key, job_key
from .layers import resolve_layers

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- durable shards


def shard_path(folder: Path, i: int) -> Path:
    return folder / f"shard-{i:06d}.npz"


def write_shard(path: Path, shard: Shard, layer_names: list[str], about: dict[str, Any]) -> None:
    """One shard, whole or not at all (a temporary beside it, then a rename). ``about``: the content
    key the worker computed and the model's account (``assembly.describe``)."""
    buf = io.BytesIO()
    meta = {
        "layers": layer_names,
        "reshapes": shard.reshapes,
        "bad": [[int(i), r] for i, r in shard.bad],
        "forward_calls": shard.forward_calls,
        **about,
    }
    arrays = {f"layer_{j}": shard.embeddings[name] for j, name in enumerate(layer_names)}
    hashes = shard.hashes if shard.hashes is not None else np.zeros((len(shard.indices), 16), np.uint8)
    arrays.update(indices=shard.indices, thumbnails=shard.thumbnails, hashes=hashes)
    np.savez(buf, __meta__=np.asarray(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_shard(path: Path) -> tuple[Shard, dict[str, Any]] | None:
    """A durable shard, or None when it is missing or damaged (then it is computed again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            emb = {name: np.asarray(z[f"layer_{j}"]) for j, name in enumerate(meta["layers"])}
            shard = Shard(
                indices=np.asarray(z["indices"]),
                embeddings=emb,
                thumbnails=np.asarray(z["thumbnails"]),
                hashes=np.asarray(z["hashes"]),
                bad=tuple((int(i), str(r)) for i, r in meta["bad"]),
                reshapes=meta["reshapes"],
                forward_calls=int(meta["forward_calls"]),
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return shard, meta


def shards_in_order(folder: Path, n_shards: int) -> Iterator[tuple[Shard, dict[str, Any]]]:
    """The durable shards of a finished job, in order (one at a time: memory stays one shard's)."""
    for i in range(n_shards):
        got = read_shard(shard_path(folder, i))
        if got is None:
            raise RayError(f"ray: shard {i} is missing or damaged in {folder}; re-run to compute it")
        yield got


def remove_shards(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- the worker


@dataclass(frozen=True, eq=False)
class RayJob:
    """What every worker needs (pickled to the actors): the specs, the selection, where shards go."""

    model: ModelSpec
    dataset: DatasetParams
    seed: int
    indices: np.ndarray  # the selected dataset indices, in order
    folder: Path  # <cache>/shards/<job key>
    thumbnail_px: int
    threads: int
    decode_workers: int | None
    dataset_fingerprint: str


class ShardWorker:
    """A Ray Data callable class: loads the dataset and the model once (``__init__``), then runs
    whole shards (``__call__``), writing each to the shared store before reporting it done. It
    computes the embeddings' key itself (``identity.embedding_key``, as the local engine would):
    the driver never loads the model."""

    JOB: ClassVar[RayJob | None] = None  # set on the per-job subclass the driver sends (see RayEngine._run)

    def __init__(self) -> None:
        import torch

        job = self.JOB
        assert job is not None
        if job.threads:
            torch.set_num_threads(
                job.threads
            )  # Ray sets OMP_NUM_THREADS to the actor's CPUs; a GPU actor decodes on them
        self.job = job
        ds = load_dataset(job.dataset)
        if ds.fingerprint != job.dataset_fingerprint:
            raise DataError(
                f"dataset: the worker on {os.uname().nodename} reads other data than the driver (fingerprints differ); "
                "the dataset's files must be the same on every node"
            )
        self.request = EmbedRequest(job.model, job.dataset, ds, job.indices, job.seed, job.thumbnail_px)
        self.loaded = load_model(job.model, seed=job.seed)
        self.layers = resolve_layers(self.loaded.module, job.model.layers)
        m = job.model
        self.extractor = Extractor(
            self.loaded,
            self.layers,
            batch_size=m.batch_size,
            thumbnail_px=job.thumbnail_px,
            on_bad_image=job.dataset.on_bad_image,
            max_features=m.max_features,
            num_workers=job.decode_workers,
            jit=m.jit,
            precision=m.precision,
            expected_samples=len(job.indices),  # the same tracing decision as the local engine
        )
        self.key = embedding_key(self.request, self.loaded.info)
        self.pid = os.getpid()
        import ray

        self.node = ray.get_runtime_context().get_node_id()  # which machine of the cluster ran each shard

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            k: [] for k in ("shard", "count", "forward_calls", "seconds", "pid", "node", "key")
        }
        for i, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
            i = int(i)
            path = shard_path(self.job.folder, i)
            t0 = time.perf_counter()
            done = read_shard(path)  # a retried task whose shard a killed worker had already written
            if done is None:
                shard = self.extractor.run(self.request.ds, self.job.indices[int(start) : int(stop)])
                about = {"key": self.key, **describe(self.loaded, self.layers, self.extractor, self.request)}
                write_shard(path, shard, [l.name for l in self.layers], about)
                calls, count = shard.forward_calls, len(shard.indices) + len(shard.bad)
            else:
                calls, count = 0, len(done[0].indices) + len(done[0].bad)
            row = {"shard": i, "count": count, "forward_calls": calls, "seconds": time.perf_counter() - t0}
            for k, v in {**row, "pid": self.pid, "node": self.node, "key": self.key}.items():
                out[k].append(v)
        return out


# ----------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class RayRun:
    """What a Ray extraction did: shards computed now and before, forward passes, workers."""

    shards: int
    computed: int
    reused: int
    forward_calls: int
    workers: int
    seconds: float
    device: str
    nodes: int = 0  # how many of the cluster's machines computed shards


class RayEngine:
    """Runs a job's shards on a Ray cluster; the driver (this process) never loads the model."""

    name = "ray"

    def __init__(self, execution: ExecutionSpec, on_shard: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.execution = execution
        self.on_shard = on_shard

    def run(
        self, request: EmbedRequest, store: EmbeddingStore, *, key: str | None, use_cache: bool, progress: bool
    ) -> ShardRun | Embeddings:
        """Every missing shard computed on the cluster, then the job's shards read back in order.
        A finished job leaves ``done.json`` (its key) so that a re-run of a job whose key only the
        workers know finds the entry without any worker."""
        if request.module is not None:
            raise SpecError(
                f"execution.engine: ray loads every model in its workers from the spec; a Python module object "
                f"({request.model.name}) cannot travel there - use timm, factory or checkpoint, or engine: local"
            )
        ex = self.execution
        folder = store.root / "shards" / job_key(request)
        done_file = folder / "done.json"
        if not use_cache:
            remove_shards(folder)
        else:
            try:
                hit = store.load(json.loads(done_file.read_text(encoding="utf-8"))["key"])
            except (OSError, ValueError, KeyError):
                hit = None
            if hit is not None:
                return hit
        preflight(ex.address)
        job = RayJob(
            request.model,
            request.dataset,
            request.seed,
            request.indices,
            folder,
            request.thumbnail_px,
            ex.cpus_per_worker,
            request.model.num_workers,
            request.ds.fingerprint,
        )
        run = self._run(job, progress=progress)
        n_shards = -(-len(job.indices) // ex.shard_size)
        first = next(shards_in_order(folder, 1))[1]
        key = first["key"]
        if use_cache and (hit := store.load(key)) is not None:  # another job made the same embeddings meanwhile
            remove_shards(folder)
            return hit

        def shards() -> Iterator[Shard]:
            for shard, meta in shards_in_order(folder, n_shards):
                if meta["key"] != key:
                    raise RayError(
                        f"ray: the shards in {folder} were computed by different model versions (hub weights "
                        "changed?); "
                        "re-run with --no-cache"
                    )
                yield shard

        def finish() -> None:
            remove_shards(folder)
            folder.mkdir(parents=True, exist_ok=True)
            done_file.write_text(json.dumps({"key": key}), encoding="utf-8")

        about = {k: v for k, v in first.items() if k in ("model", "preprocess", "feeding", "agreement", "layer_index")}
        engine = {
            "name": "ray",
            "workers": run.workers,
            "nodes": run.nodes,
            "device": first.get("device", "cpu"),
            "shards": run.shards,
            "computed": run.computed,
            "reused": run.reused,
        }
        return ShardRun(key, shards(), lambda: about, lambda: run.forward_calls, engine=engine, finish=finish)

    def _run(self, job: RayJob, *, progress: bool) -> RayRun:
        """Run every missing shard of ``job`` on a Ray cluster; return when all are durable."""
        ex = self.execution
        job.folder.mkdir(parents=True, exist_ok=True)
        n = len(job.indices)
        bounds = [(i, s, min(s + ex.shard_size, n)) for i, s in enumerate(range(0, n, ex.shard_size))]
        missing = [b for b in bounds if read_shard(shard_path(job.folder, b[0])) is None]
        t0 = time.perf_counter()
        if not missing:
            return RayRun(len(bounds), 0, len(bounds), 0, 0, 0.0, "")
        with Connection(ex.address, ex.num_cpus) as ray:
            res = ray.cluster_resources()
            gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
            count = ex.workers or (gpus if gpus else max(1, cpus // max(1, ex.cpus_per_worker)))
            count = max(1, min(count, len(missing)))
            per_cpu = min(ex.cpus_per_worker, cpus)
            job = replace(job, threads=per_cpu)
            where = f"{gpus} GPU(s)" if gpus else f"{cpus} CPU(s)"
            log.info("ray: %d shard(s) of %d to compute on %d worker(s) (%s)", len(missing), len(bounds), count, where)
            items = ray.data.from_items(
                [{"shard": i, "start": s, "stop": e} for i, s, e in missing], override_num_blocks=len(missing)
            )
            # the job travels with the class; Ray Data restarts dead actors and retries their tasks
            # (its defaults for actor pools: max_restarts=-1, max_task_retries=-1)
            worker = type("ShardWorker", (ShardWorker,), {"JOB": job, "__module__": ShardWorker.__module__})
            results = items.map_batches(
                worker,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=count),
                num_cpus=per_cpu,
                num_gpus=1 if gpus else 0,
            )
            done, nodes, calls = self._collect(results, missing, job.model.name, progress=progress)
        lost = [i for i, _, _ in missing if read_shard(shard_path(job.folder, i)) is None]
        if lost:
            raise RayError(
                f"ray: {len(lost)} shard(s) reported done are not in {job.folder} (first: {lost[0]}); "
                "is the cache folder on a filesystem every node sees?"
            )
        seconds = time.perf_counter() - t0
        return RayRun(len(bounds), len(missing), len(bounds) - len(missing), calls, count, seconds, where, len(nodes))

    def _collect(
        self, results: Any, missing: list[tuple[int, int, int]], name: str, *, progress: bool
    ) -> tuple[set[int], set[str], int]:
        """Follow the workers' reports as shards finish: progress, ``on_shard``, forward passes."""
        from tqdm.auto import tqdm

        total = sum(e - s for _, s, e in missing)
        bar = tqdm(
            total=total,
            desc=f"extract {name} on Ray",
            unit="img",
            disable=None if progress else True,
            leave=False,
            file=sys.stderr,
        )
        done: set[int] = set()
        nodes: set[str] = set()
        calls = 0
        try:
            for b in results.iter_batches(batch_size=1, batch_format="numpy"):
                i = int(b["shard"][0])
                if i in done:  # at-least-once: a retried task may report a shard twice
                    continue
                done.add(i)
                nodes.add(str(b["node"][0]))
                calls += int(b["forward_calls"][0])
                bar.update(int(b["count"][0]))
                bar.set_postfix_str(f"shards {len(done)}/{len(missing)}")
                if self.on_shard is not None:
                    self.on_shard({k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in b.items()})
        except Exception as exc:  # a worker's error comes back wrapped by Ray Data: say what the user can act on
            user = user_error(exc)
            if user is not None:
                raise type(user)(f"{user.message} (in a Ray worker; shards finished so far are kept)") from None
            last = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise RayError(
                f"ray: the extraction job failed ({last}); shards finished so far are kept, re-run to compute the rest"
            ) from None
        finally:
            bar.close()
        return done, nodes, calls
