"""The neighbour graph at scale: which parts can run in parallel and stay deterministic.

    python benchmarks/graph.py                 # 1,000,000 tiled Fashion-MNIST rows (scaling.py's data)
    python benchmarks/graph.py --n 200000

The approximate graph (reportgen.compute.neighbours.approximate_graph) is a PCA-128 projection, an
index that proposes 45 candidates per row, and an exact re-ranking in the full space. All in one
run, on the same projection and the same seeded queries (recall@15 against exact search):

- candidates from faiss HNSW with the additions on one thread and on every core (faiss >= 1.15
  builds the same index on any number of threads: compared byte for byte), from HNSW shards built
  side by side (one thread each, a fixed number of shards, merged by score) and from a faiss IVF
  index (k-means, nprobe 8 / 16);
- each built twice: is it the same index (the same candidates for a seeded 16,384 rows)?
- the re-ranking on one thread and on every core (rows split, never sums): the same graph?

Writes benchmarks/results/graph-N.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run import machine  # noqa: E402
from scaling import prepare_precomputed  # noqa: E402

from reportgen.compute import neighbours as nb  # noqa: E402
from reportgen.machine import cores  # noqa: E402

K = 15
M = nb.CANDIDATE_FACTOR * K


def _search(index, z: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    q = z if rows is None else z[rows]
    out = np.empty((len(q), M + 1), np.int64)
    for s in range(0, len(q), 65_536):
        out[s : s + 65_536] = index.search(np.ascontiguousarray(q[s : s + 65_536]), M + 1)[1]
    return out


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Shards' (scores, global ids) merged: the M + 1 best scores, ties to the lower id."""
    d = np.concatenate([p[0] for p in parts], 1)
    i = np.concatenate([p[1] for p in parts], 1)
    d = np.where(i < 0, -np.inf, d)
    order = np.lexsort((i, -d), axis=1)[:, : M + 1]
    return np.take_along_axis(i, order, 1)


class Sharded:
    """HNSW shards of consecutive rows, each built on one thread, side by side: deterministic for
    a fixed number of shards (the number is the data's choice here, never the machine's)."""

    def __init__(self, z: np.ndarray, shards: int):
        self.bounds = np.linspace(0, len(z), shards + 1).astype(int)
        with ThreadPoolExecutor(min(shards, cores())) as ex:
            self.parts = list(ex.map(lambda s: nb.hnsw_index(z[self.bounds[s] : self.bounds[s + 1]]), range(shards)))
        for p in self.parts:
            p.hnsw.efSearch = 64

    def search(self, q: np.ndarray, m: int) -> tuple[None, np.ndarray]:
        found = []
        for b, p in zip(self.bounds, self.parts):
            d, i = p.search(q, m)
            found.append((d, np.where(i < 0, -1, i + b)))
        return None, _merge(found)


def ivf(z: np.ndarray, nprobe: int):
    import faiss

    nlist = max(16, len(z) // 256)
    rng = np.random.default_rng(0)
    train = z[np.sort(rng.choice(len(z), min(len(z), 40 * nlist), replace=False))]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(z.shape[1]), z.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.seed = 10, 0
    index.train(train)
    index.add(z)
    index.nprobe = nprobe
    return index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "reportgen-scale-data")
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    import faiss

    x = np.load(prepare_precomputed(args.data, args.n) / "vectors.npy", mmap_mode="r")[: args.n]
    n = len(x)
    out: dict = {"n": n, "dims": x.shape[1], "k": K, "candidates": M, "machine": machine(), "cores": cores()}
    t = time.perf_counter()
    z, sqnorm = nb.project(x)
    out["projection_s"] = round(time.perf_counter() - t, 1)
    queries = np.sort(np.random.default_rng(1).choice(n, 300, replace=False))
    exact = nb.exact_neighbours_of(x, queries, K)
    same_rows = np.sort(np.random.default_rng(2).choice(n, min(n, 16_384), replace=False))

    def recall(cand: np.ndarray) -> float:
        return float(np.mean([len(set(e) & set(c)) / K for e, c in zip(exact, cand)]))

    def index_row(name: str, build, deterministic_claim: str) -> None:
        t = time.perf_counter()
        a = build()
        built = time.perf_counter() - t
        t = time.perf_counter()
        cand = _search(a, z)
        searched = time.perf_counter() - t
        b = build()
        same = float(np.mean((_search(a, z, same_rows) == _search(b, z, same_rows)).all(1)))
        del a, b
        r = {
            "build_s": round(built, 1),
            "search_s": round(searched, 1),
            "total_s": round(built + searched, 1),
            "candidate_recall": round(recall(cand[queries]), 4),
            "same_index_rows": round(same, 5),
            "deterministic": deterministic_claim,
        }
        out.setdefault("indexes", {})[name] = r
        print(f"{name:<36} {r}", flush=True)

    def hnsw(threads: int):
        def build():
            index = nb.hnsw_index(z, threads=threads)
            index.hnsw.efSearch = 64
            return index

        return build

    index_row("hnsw, additions on 1 thread", hnsw(1), "yes")
    links = [faiss.serialize_index(hnsw(t)()) for t in (1, cores())]  # the whole index, a copy
    out["hnsw_links_equal_1_vs_all_threads"] = bool(np.array_equal(*links))
    del links
    index_row(
        f"hnsw, additions on {cores()} threads",
        hnsw(cores()),
        f"faiss {faiss.__version__} deterministic build: {nb.deterministic_hnsw_build()}, links equal to one "
        f"thread's (the serialised index, byte for byte): {out['hnsw_links_equal_1_vs_all_threads']}",
    )
    index_row(f"hnsw, {args.shards} shards side by side", lambda: Sharded(z, args.shards), "yes: fixed shards")
    for p in (8, 16):
        index_row(f"ivf nprobe {p}", lambda p=p: ivf(z, p), "yes: k-means seeded, lists in row order")

    index = hnsw(1)()
    cand = _search(index, z)
    graphs = {}
    for w in sorted({1, min(8, cores())}):
        t = time.perf_counter()
        graphs[w] = nb.rerank(x, lambda s, e: cand[s:e], K, sqnorm=sqnorm, workers=w)
        out.setdefault("rerank_s", {})[str(w)] = round(time.perf_counter() - t, 1)
    ws = sorted(graphs)
    out["rerank_same_graph"] = all(
        np.array_equal(graphs[ws[0]].indices, graphs[w].indices)
        and np.array_equal(graphs[ws[0]].distances, graphs[w].distances)
        for w in ws
    )
    out["graph_recall"] = round(recall(graphs[ws[0]].indices[queries]), 4)
    print(f"projection {out['projection_s']} s; re-ranking {out['rerank_s']} s, same graph: {out['rerank_same_graph']}")
    print(f"faiss threads {faiss.omp_get_max_threads()}; graph recall@{K} {out['graph_recall']}")
    path = ROOT / "benchmarks" / "results" / f"graph-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
