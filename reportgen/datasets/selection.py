"""Which samples of a dataset a build uses: all, or ``limit`` of them, first / random / stratified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Dataset


@dataclass(frozen=True)
class Selection:
    """Which samples of a dataset a build uses (indices into the dataset, sorted)."""

    indices: np.ndarray
    used_per_class: dict[str, int]
    total_per_class: dict[str, int]
    method: str


def select_samples(
    ds: Dataset, *, limit: int | None, method: str, seed: int, max_samples: int | None = None
) -> Selection:
    """Pick the samples a build uses: all, or ``limit`` of them by ``first``/``random``/``stratified``."""
    n = len(ds)
    cap = min(x for x in (limit, max_samples, n) if x is not None)
    if cap >= n:
        idx = np.arange(n)
        method = "all"
    elif method == "first":
        idx = np.arange(cap)
    elif method == "random":
        idx = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
    else:
        idx = stratified_rows(ds.labels, len(ds.class_names), cap, seed)
    used = np.bincount(ds.labels[idx], minlength=len(ds.class_names))
    return Selection(
        indices=idx.astype(np.int64),
        used_per_class={c: int(u) for c, u in zip(ds.class_names, used)},
        total_per_class={c: int(t) for c, t in zip(ds.class_names, ds.counts)},
        method=method,
    )


def stratified_rows(labels: np.ndarray, n_classes: int, cap: int, seed: int) -> np.ndarray:
    """A seeded stratified sample of ``cap`` rows (sorted): proportional allocation with largest
    remainders, at least one per class where possible."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=n_classes)
    share = counts / counts.sum() * cap
    take = np.floor(share).astype(int)
    take = np.minimum(np.maximum(take, (counts > 0).astype(int)), counts)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    i = 0
    while take.sum() < cap and i < 10 * len(order):
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > cap:
        c = int(np.argmax(take))
        take[c] -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(t), replace=False) for c, t in enumerate(take) if t]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
