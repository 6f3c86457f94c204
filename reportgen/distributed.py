"""Distributed extraction on Ray Data: the selected samples split into shards, an actor pool with one
model replica per worker (one per GPU where the cluster has GPUs), each finished shard durable in
the store the moment it is done.

    execution: {engine: ray, address: auto}      # or --engine ray --address ray://head:10001

Every worker reads the dataset and writes shards itself, so the dataset's files and the cache
folder must be on a filesystem all nodes see (an NFS or similar mount at the same path). Shards
live in ``<cache>/shards/<key>/``; when all are there the driver assembles them into the usual
embedding entry (``<cache>/embeddings/<key>/``, the same content key as the local path), so
``reportgen build`` then finds the embeddings and runs no forward pass. A re-run after a failure
(a dead worker, an interrupted driver) computes only the shards that are missing. Ray's own actor
restarts and task retries handle workers that die mid-job; no scheduler is written here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import Dataset, load_dataset
from .errors import DataError, ReportgenError
from .extract import EMBEDDING_CODE, Extractor, Shard, embeddings_key, resolve_layers
from .fingerprint import code_fingerprint
from .models import load_model
from .results import Embeddings
from .store import EmbeddingStore, content_key, temp_name

log = logging.getLogger(__name__)


class RayError(ReportgenError):
    """Ray is missing, unreachable, or a job failed."""


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayError(
            "execution.engine: ray needs Ray Data; pip install 'reportgen[ray]' (or set execution.engine: local)"
        ) from None
    return ray


# ----------------------------------------------------------------------------- durable shards


def shard_path(folder: Path, i: int) -> Path:
    return folder / f"shard-{i:06d}.npz"


def write_shard(path: Path, shard: Shard, layer_names: list[str], about: dict) -> None:
    """One shard, whole or not at all (a temporary beside it, then a rename). ``about``: the content
    key the worker computed, the model's description, how images were fed."""
    buf = io.BytesIO()
    meta = {
        "layers": layer_names,
        "reshapes": shard.reshapes,
        "bad": [[int(i), r] for i, r in shard.bad],
        "forward_calls": shard.forward_calls,
        **about,
    }
    arrays = {f"layer_{j}": shard.embeddings[name] for j, name in enumerate(layer_names)}
    np.savez(
        buf,
        __meta__=np.asarray(json.dumps(meta)),
        indices=shard.indices,
        thumbnails=shard.thumbnails,
        hashes=shard.hashes,
        **arrays,
    )
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_shard(path: Path) -> tuple[Shard, dict] | None:
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


# ----------------------------------------------------------------------------- the worker


class ShardWorker:
    """A Ray Data callable class: loads the dataset and the model once (``__init__``), then runs
    whole shards (``__call__``), writing each to the shared store before reporting it done. It
    computes the embeddings' content key itself, as the local path would (the driver never loads
    the model)."""

    JOB: RayJob | None = None  # set on the per-job subclass the driver sends (see extract_on_ray)

    def __init__(self) -> None:
        import torch

        job = self.JOB
        if job.threads:
            torch.set_num_threads(
                job.threads
            )  # Ray sets OMP_NUM_THREADS to the actor's CPUs; a GPU actor decodes on them
        self.job = job
        self.ds = load_dataset(job.dataset)
        if self.ds.fingerprint != job.dataset_fingerprint:
            raise DataError(
                f"dataset: the worker on {os.uname().nodename} reads other data than the driver (fingerprints differ); the dataset's files must be the same on every node"
            )
        loaded = load_model(job.model, seed=job.seed)
        layers = resolve_layers(loaded.module, job.model.layers)
        self.layer_names = [l.name for l in layers]
        m = job.model
        self.extractor = Extractor(
            loaded,
            layers,
            batch_size=m.batch_size,
            thumbnail_px=job.thumbnail_px,
            on_bad_image=job.on_bad_image,
            max_features=m.max_features,
            num_workers=job.decode_workers,
            jit=job.jit,
            precision=m.precision,
            expected_samples=len(job.indices),
        )  # the same tracing decision as the local path
        info = loaded.info
        self.about = {
            "key": embeddings_key(info, layers, m, self.ds, job.indices, job.thumbnail_px, job.on_bad_image),
            "model": {
                "name": info.name,
                "arch": info.arch,
                "source": info.source,
                "weights_sha256": info.weights_sha256,
            },
            "preprocess": info.preprocess.as_dict(),
            "feeding": self.extractor.feeding(self.ds).as_dict(),
            "device": info.device,
            "layer_index": {l.name: l.index for l in layers},
        }
        self.pid = os.getpid()
        import ray

        self.node = ray.get_runtime_context().get_node_id()  # which machine of the cluster ran each shard

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {
            "shard": [],
            "count": [],
            "forward_calls": [],
            "seconds": [],
            "pid": [],
            "node": [],
            "key": [],
        }
        for i, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
            i = int(i)
            path = shard_path(self.job.folder, i)
            t0 = time.perf_counter()
            done = read_shard(path)  # a retried task whose shard a killed worker had already written
            if done is None:
                shard = self.extractor.run(self.ds, self.job.indices[int(start) : int(stop)])
                write_shard(path, shard, self.layer_names, {**self.about, "agreement": self.extractor.agreement})
                calls, count = shard.forward_calls, len(shard.indices) + len(shard.bad)
            else:
                calls, count = 0, len(done[0].indices) + len(done[0].bad)
            for k, v in (
                ("shard", i),
                ("count", count),
                ("forward_calls", calls),
                ("seconds", time.perf_counter() - t0),
                ("pid", self.pid),
                ("node", self.node),
                ("key", self.about["key"]),
            ):
                out[k].append(v)
        return out


# ----------------------------------------------------------------------------- the driver


@dataclass(frozen=True, eq=False)
class RayJob:
    """What every worker needs (pickled to the actors): specs, the selection, where shards go."""

    model: Any  # spec.ModelSpec
    dataset: Any  # a dataset spec
    seed: int
    indices: np.ndarray  # the selected dataset indices, in order
    folder: Path  # <cache>/shards/ until the job key is known, then <cache>/shards/<job key>
    thumbnail_px: int
    on_bad_image: str
    jit: Any
    threads: int
    decode_workers: int | None
    dataset_fingerprint: str

    def key(self) -> str:
        """The job's identity from the spec alone (the model is not loaded here): its shards folder.
        The workers still compute the content key of what they produce, and every shard must agree."""
        import hashlib

        m = self.model.model_dump(mode="json", exclude={"name", "device", "batch_size", "num_workers", "channels_last"})
        return content_key(
            {
                "job": "ray",
                "model": m,
                "seed": self.seed,
                "dataset": self.dataset_fingerprint,
                "thumb": self.thumbnail_px,
                "selection": hashlib.sha256(np.ascontiguousarray(self.indices, np.int64).tobytes()).hexdigest(),
                "on_bad_image": self.on_bad_image,
                "code": code_fingerprint(*EMBEDDING_CODE, "reportgen.models"),
            }
        )


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


class _Connection:
    """``ray.init`` for this job (a local cluster when no address is given), shut down after it if
    this process started it; Ray Data's own logging and progress bars quieted meanwhile."""

    def __init__(self, address: str | None, num_cpus: int | None) -> None:
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self):
        ray = import_ray()
        if not ray.is_initialized():
            # No address (and no RAY_ADDRESS, Ray's own convention): a new local cluster for this job,
            # as documented - not whichever cluster 'ray start' last left running on this machine,
            # which is what ray.init() alone would join.
            self.address = self.address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
                "address": self.address or "local",
            }
            if self.address:
                probe_address(self.address)
            elif self.num_cpus:
                kwargs["num_cpus"] = self.num_cpus
            quiet = logging.getLogger("ray")
            before = quiet.level
            quiet.setLevel(
                logging.ERROR
            )  # start-up notices (e.g. that the job's own cluster uses token authentication)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                if not self.address:
                    raise RayError(
                        f"execution: cannot start a local Ray cluster for the job ({first}); run 'ray start --head' and pass --address auto"
                    ) from None
                raise RayError(
                    f"execution.address: cannot join the Ray cluster at {self.address!r} ({first}); check that it runs ('ray status') and, "
                    "as 'ray start' turns on token authentication, that this machine has RAY_AUTH_MODE=token and the head's token "
                    "(its ~/.ray/auth_token, or RAY_AUTH_TOKEN)"
                ) from None
            finally:
                quiet.setLevel(before)
            self.started = True
        self.ray = ray
        self.loggers = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(
            logging.ERROR
        )  # plan and progress chatter; reportgen shows its own progress
        ctx = ray.data.DataContext.get_current()
        self.progress = ctx.enable_progress_bars
        ctx.enable_progress_bars = False
        return ray

    def __exit__(self, *exc) -> None:
        self.ray.data.DataContext.get_current().enable_progress_bars = self.progress
        for name, level in self.loggers.items():
            logging.getLogger(name).setLevel(level)
        if self.started:
            self.ray.shutdown()


def preflight(address: str | None) -> None:
    """Ray Data importable and the cluster reachable, or a one-line error now."""
    import_ray()
    if address:
        probe_address(address)


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (``ray.init`` would retry for minutes)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"execution.address: {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RayError(
            f"execution.address: cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); start one with 'ray start --head' "
            "or leave the address out to run a local cluster"
        ) from None
    if "://" not in address and not _token_accepted(hostport):
        raise RayError(
            f"execution.address: the Ray cluster at {address!r} refuses this machine's token; 'ray start' turns on token authentication: "
            "set RAY_AUTH_MODE=token here and give this machine the head's token (its ~/.ray/auth_token, or RAY_AUTH_TOKEN)"
        )


def _token_accepted(hostport: str, wait: float = 3.0) -> bool:
    """False only when the cluster's GCS answers that this process's token is missing or wrong (it
    answers at once). ``ray.init`` would retry for seconds, logging a warning each time, and end with
    a message that does not name the token. Any other outcome - no answer within ``wait``, another
    error, a Ray without this (internal) client - is left for ``ray.init`` to report."""
    import threading

    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return True
    refused: list[bool] = []

    def probe() -> None:
        try:
            GcsClient(address=hostport)
        except AuthenticationError:
            refused.append(True)
        except Exception:
            pass

    t = threading.Thread(target=probe, name="reportgen-ray-token-probe", daemon=True)
    t.start()
    t.join(wait)
    return not refused


def extract_on_ray(
    job: RayJob,
    *,
    address: str | None,
    workers: int | None,
    cpus_per_worker: int,
    shard_size: int,
    num_cpus: int | None = None,
    progress: bool = True,
    on_shard: Callable[[dict], None] | None = None,
    name: str = "model",
) -> RayRun:
    """Run every missing shard of ``job`` on a Ray cluster; return when all are durable."""
    job.folder.mkdir(parents=True, exist_ok=True)
    n = len(job.indices)
    bounds = [(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]
    missing = [b for b in bounds if read_shard(shard_path(job.folder, b[0])) is None]
    t0 = time.perf_counter()
    if not missing:
        return RayRun(len(bounds), 0, len(bounds), 0, 0, 0.0, "")
    with _Connection(address, num_cpus) as ray:
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        cpus = int(res.get("CPU", 1))
        count = workers or (gpus if gpus else max(1, cpus // max(1, cpus_per_worker)))
        count = max(1, min(count, len(missing)))
        per_cpu = min(cpus_per_worker, cpus)
        job = _with_threads(job, per_cpu)
        log.info(
            "ray: %d shard(s) of %d to compute on %d worker(s) (%s)",
            len(missing),
            len(bounds),
            count,
            f"{gpus} GPU(s)" if gpus else f"{cpus} CPU(s)",
        )
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
                if on_shard is not None:
                    on_shard({k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in b.items()})
        except Exception as exc:  # a worker's error comes back wrapped by Ray Data: say what the user can act on
            user = _user_error(exc)
            if user is not None:
                raise type(user)(f"{user.message} (in a Ray worker; shards finished so far are kept)") from None
            last = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise RayError(
                f"ray: the extraction job failed ({last}); shards finished so far are kept, re-run to compute the rest"
            ) from None
        finally:
            bar.close()
    lost = [i for i, _, _ in missing if read_shard(shard_path(job.folder, i)) is None]
    if lost:
        raise RayError(
            f"ray: {len(lost)} shard(s) reported done are not in {job.folder} (first: {lost[0]}); is the cache folder on a filesystem every node sees?"
        )
    return RayRun(
        len(bounds),
        len(missing),
        len(bounds) - len(missing),
        calls,
        count,
        time.perf_counter() - t0,
        f"{gpus} GPU(s)" if gpus else "CPU",
        len(nodes),
    )


def _user_error(exc: BaseException) -> ReportgenError | None:
    """The reportgen error (bad data, a broken model) inside Ray's wrappers, if there is one."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ReportgenError) and type(e).__module__.startswith("reportgen"):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def _with_threads(job: RayJob, threads: int) -> RayJob:
    from dataclasses import replace

    return replace(job, threads=threads)


def embed_on_ray(
    job: RayJob,
    store: EmbeddingStore,
    ds: Dataset,
    execution,
    *,
    use_cache: bool,
    progress: bool,
    on_shard: Callable[[dict], None] | None = None,
    name: str = "model",
) -> Embeddings:
    """Extraction on a Ray cluster, driven from here without loading the model: the workers make each
    shard durable, then the shards are assembled into the store entry under the content key the
    workers computed (the local path's key). A finished job leaves ``done.json`` (job -> content
    key) so a re-run finds the entry without any worker."""
    from dataclasses import replace

    folder = store.root / "shards" / job.key()
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
    preflight(execution.address)
    job = replace(job, folder=folder)
    run = extract_on_ray(
        job,
        address=execution.address,
        workers=execution.workers,
        cpus_per_worker=execution.cpus_per_worker,
        shard_size=execution.shard_size,
        num_cpus=execution.num_cpus,
        progress=progress,
        on_shard=on_shard,
        name=name,
    )
    n_shards = -(-len(job.indices) // execution.shard_size)
    first = next(shards_in_order(folder, 1))[1]
    key = first["key"]
    if use_cache and (hit := store.load(key)) is not None:  # another job made the same embeddings meanwhile
        remove_shards(folder)
        return hit
    writer = store.writer(key, job.thumbnail_px)
    try:
        for shard, meta in shards_in_order(folder, n_shards):
            if meta["key"] != key:
                raise ReportgenError(
                    f"ray: the shards in {folder} were computed by different model versions (hub weights changed?); re-run with --no-cache"
                )
            writer.append(shard, ds.labels[shard.indices])
        if writer.count == 0:
            raise DataError(
                f"dataset: none of the {len(job.indices)} selected images could be read (first: {writer.bad[0][1] if writer.bad else 'no reason given'})"
            )
        ids = [ds.ids[int(i)] for i in np.concatenate(writer.indices)]
        bad = [(ds.ids[i], r) for i, r in writer.bad]
        manifest = {
            "model": {**first["model"], "name": name},
            "dataset": {
                "name": ds.name,
                "kind": ds.kind,
                "fingerprint": ds.fingerprint,
                "class_names": list(ds.class_names),
            },
            "preprocess": first["preprocess"],
            "thumbnail_px": job.thumbnail_px,
            "feeding": {**first["feeding"], "precision": job.model.precision},
            "agreement": first.get("agreement") or {},
            "layer_index": first.get("layer_index") or {},
            "engine": {
                "name": "ray",
                "workers": run.workers,
                "nodes": run.nodes,
                "device": first.get("device", "cpu"),
                "shards": run.shards,
                "computed": run.computed,
                "reused": run.reused,
            },
        }
        writer.commit(ids, bad, manifest)
    except BaseException:
        writer.abort()
        raise
    remove_shards(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done_file.write_text(json.dumps({"key": key}), encoding="utf-8")
    stored = store.load(key, verify=False, origin="computed")
    if stored is None:
        raise ReportgenError(
            f"cache: entry {key} vanished right after it was written; is another process clearing {store.dir}?"
        )
    return replace(stored, forward_calls=run.forward_calls)


def shards_in_order(folder: Path, n_shards: int):
    """The durable shards of a finished job, in order (one at a time: memory stays one shard's)."""
    for i in range(n_shards):
        got = read_shard(shard_path(folder, i))
        if got is None:
            raise RayError(f"ray: shard {i} is missing or damaged in {folder}; re-run to compute it")
        yield got


def remove_shards(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
