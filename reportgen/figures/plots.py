"""Plots: explicit ``Figure`` objects (no pyplot state, Agg backend), as umap-learn's plots: each
plot function draws on the ``ax`` (or ``fig``) it is given, or on a new figure of its own size, and
returns the figure; ``figure_png`` turns it into bytes and frees it."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .encoding import listed_colours

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes (no timestamp or software tag, so equal figures give equal bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def figure_png_points(fig: Figure, points: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A figure as PNG bytes, and where ``points`` (data coordinates of its first axes) landed in
    the image: (n, 2) pixels from its top left (for an HTML image map)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # draws: the layout is final
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    xy = fig.axes[0].transData.transform(pts) * (100 / fig.dpi) if len(pts) else np.zeros((0, 2))
    xy[:, 1] = round(fig.get_figheight() * 100) - xy[:, 1]
    fig.clear()
    return buf.getvalue(), xy


def scree_plot(ratio: np.ndarray, *, ax: Axes | None = None) -> Figure:
    ax = ax if ax is not None else _figure(5.2, 2.8).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    k = len(ratio)
    xs = np.arange(1, k + 1)
    ax.bar(xs, ratio * 100, color="#4c72b0", label="per component")
    ax.plot(xs, np.cumsum(ratio) * 100, color="#dd8452", marker="o", ms=3, label="cumulative")
    ax.set_xlabel("principal component")
    ax.set_ylabel("% of variance")
    ax.set_ylim(0, 100)
    ax.set_xticks(xs)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center right", fontsize=8, frameon=False)
    return fig


#: With more classes than this, only the largest classes get a label at their centroid.
CENTROID_LABELS = 60
#: Classes that get a density contour on a sampled map (the largest).
CONTOUR_CLASSES = 20


def class_contours(ax: Axes, coords: np.ndarray, labels: np.ndarray, colours: np.ndarray, *, grid: int = 90) -> None:
    """For each of the largest classes, a line around the densest region holding half its samples
    (a 2-D histogram of all of them, smoothed), in the class colour."""
    from scipy.ndimage import gaussian_filter

    ok = np.isfinite(coords).all(axis=1)
    c, y = coords[ok], labels[ok]
    if len(c) < 10:
        return
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - 0.02 * span, hi + 0.02 * span
    counts = np.bincount(y, minlength=len(colours))
    xs = np.linspace(lo[0], hi[0], grid)
    ys = np.linspace(lo[1], hi[1], grid)
    for k in np.argsort(-counts, kind="stable")[:CONTOUR_CLASSES]:
        if counts[k] < 20:
            break
        h, _, _ = np.histogram2d(c[y == k, 0], c[y == k, 1], bins=grid, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
        h = gaussian_filter(h, float(np.clip(12 / counts[k] ** 0.25, 1.0, 4.0)))  # smoother for a small class
        flat = np.sort(h.ravel())[::-1]
        cum = np.cumsum(flat)
        if cum[-1] <= 0:
            continue
        level = flat[min(int(np.searchsorted(cum, 0.5 * cum[-1])), len(flat) - 1)]
        if level <= 0:
            continue
        ax.contour(xs, ys, h.T, levels=[level], colors=[colours[k] / 255.0], linewidths=0.9, alpha=0.9, zorder=2)


def scatter_plot(
    coords: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colours: np.ndarray,
    *,
    title: str = "",
    seed: int = 0,
    density: np.ndarray | None = None,
    density_labels: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    ax: Axes | None = None,
) -> Figure:
    """One colour per class, drawn in a seeded random order (no class always on top). ``density``:
    the positions of all samples (when only some are dots), drawn behind as grey hexagons (log counts)
    and, with ``density_labels`` (their classes), one contour per class (up to CONTOUR_CLASSES, the
    largest) around the densest half of its samples: nothing of the data is hidden by sampling.
    ``counts``: samples per class for the legend (default: the dots')."""
    n_classes = len(class_names)
    ax = ax if ax is not None else _figure(6.4, 5.0 if n_classes <= 20 else 5.6).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    if density is not None:
        ax.hexbin(
            density[:, 0],
            density[:, 1],
            gridsize=90,
            bins="log",
            cmap="Greys",
            mincnt=1,
            linewidths=0,
            alpha=0.55,
            zorder=0,
        )
        if density_labels is not None:
            class_contours(ax, density, density_labels, colours)
    order = np.random.default_rng(seed).permutation(len(coords))
    size = float(np.clip(2000 / max(len(coords), 1) ** 0.8, 0.6, 40))
    ax.scatter(
        coords[order, 0],
        coords[order, 1],
        c=colours[labels[order]] / 255.0,
        s=size,
        linewidths=0,
        alpha=0.85,
        rasterized=True,
        zorder=1,
    )
    counts = np.bincount(labels, minlength=n_classes) if counts is None else counts
    if n_classes <= 20:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], ls="", marker="o", color=colours[i] / 255.0, label=f"{class_names[i][:28]} ({counts[i]})")
            for i in range(n_classes)
            if counts[i]
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=7.5,
            frameon=False,
            title="class (n)",
            title_fontsize=8,
        )
    else:  # colours run out: label classes at their centroids instead of a legend
        shown = set(np.argsort(-counts, kind="stable")[:CENTROID_LABELS].tolist())
        for c in range(n_classes):
            m = labels == c
            if m.any() and c in shown:
                cx, cy = np.median(coords[m], axis=0)
                ax.text(
                    cx,
                    cy,
                    class_names[c][:16],
                    fontsize=6,
                    ha="center",
                    va="center",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.6},
                )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return fig


#: Above this many samples a slice map draws a seeded subset of them in grey.
BACKGROUND_CAP = 100_000


def slices_plot(
    coords: np.ndarray,
    assignment: np.ndarray,
    shown: list[int],
    *,
    seed: int = 0,
    background_cap: int = BACKGROUND_CAP,
    ax: Axes | None = None,
) -> Figure:
    """Slices on a map: every sample a grey dot (a seeded subset above ``background_cap``), the
    members of each shown slice in its own colour, its number at its centre."""

    ax = ax if ax is not None else _figure(6.4, 5.0).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    rng = np.random.default_rng(seed)
    bg = (
        np.arange(len(coords))
        if len(coords) <= background_cap
        else np.sort(rng.choice(len(coords), background_cap, replace=False))
    )
    size = float(np.clip(2000 / max(len(bg), 1) ** 0.8, 0.5, 30))
    ax.scatter(coords[bg, 0], coords[bg, 1], s=size, c="#d5d9de", linewidths=0, rasterized=True)
    cols = listed_colours("tab20")
    for i, sid in enumerate(shown):
        m = np.flatnonzero(assignment == sid)
        if len(m) > background_cap // 10:
            m = np.sort(rng.choice(m, background_cap // 10, replace=False))
        ax.scatter(coords[m, 0], coords[m, 1], s=size * 1.5, color=cols[i % 20], linewidths=0, rasterized=True)
        cx, cy = np.median(coords[m], axis=0)
        ax.text(
            cx,
            cy,
            f"S{sid}",
            fontsize=8,
            weight="bold",
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": cols[i % 20], "alpha": 0.85},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def depth_plot(
    layers: list[str],
    intrinsic: np.ndarray,
    participation: np.ndarray,
    knn: np.ndarray,
    probe: np.ndarray,
    *,
    effective_rank: np.ndarray | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Two small panels over the layers in order: dimensions (log scale) and accuracies."""
    fig = fig if fig is not None else _figure(6.2, 2.6)
    a, b = fig.subplots(1, 2)
    xs = np.arange(len(layers))
    a.plot(xs, intrinsic, marker="o", color="#2f5d9b", label="intrinsic dim. (TwoNN)")
    a.plot(xs, participation, marker="s", color="#dd8452", label="participation ratio")
    if effective_rank is not None and len(effective_rank) == len(xs):
        a.plot(xs, effective_rank, marker="^", color="#4c8c4a", label="effective rank (RankMe)")
    a.set_yscale("log")
    # plain numbers on the log axis ("14", not "1.4 x 10^1", which matplotlib writes when the values
    # span less than a decade)
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    a.yaxis.set_major_formatter(plain)
    values = np.concatenate(
        [np.asarray(intrinsic, float), np.asarray(participation, float)]
        + ([np.asarray(effective_rank, float)] if effective_rank is not None else [])
    )
    values = values[np.isfinite(values) & (values > 0)]
    if (
        len(values) and values.max() / values.min() < 10
    ):  # within a decade only minor ticks carry numbers; wider, they would crowd
        a.yaxis.set_minor_formatter(plain)
    b.plot(xs, knn, marker="o", color="#1e7b34", label="kNN accuracy")
    b.plot(xs, probe, marker="s", color="#7b3f9e", label="linear probe")
    b.set_ylim(0, 1.02)
    for ax in (a, b):
        ax.set_xticks(xs, [l[-14:] for l in layers], rotation=35, ha="right", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, frameon=False)
    return fig


def heatmap(
    values: np.ndarray,
    row_names: Sequence[object],
    col_names: Sequence[object],
    *,
    cmap: str = "RdBu_r",
    vlim: float | None = None,
    label: str = "",
    fmt: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    rows, cols = values.shape
    ax = ax if ax is not None else _figure(min(1.4 + 0.45 * cols, 9), min(1.2 + 0.26 * rows, 14)).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    v = np.nan_to_num(values, nan=0.0)
    lim = vlim if vlim is not None else float(np.nanmax(np.abs(v))) or 1.0
    im = ax.imshow(v, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(cols), [str(c) for c in col_names], fontsize=7)
    step = max(1, rows // 60)
    ax.set_yticks(range(0, rows, step), [str(r)[:22] for r in list(row_names)[::step]], fontsize=7)
    if fmt and rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                ax.text(
                    j,
                    i,
                    format(v[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(v[i, j]) > 0.6 * lim else "black",
                )
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=7)
    return fig


def axis_histogram(
    t: np.ndarray,
    labels: np.ndarray,
    ia: int,
    ib: int,
    names: Sequence[str],
    colours: np.ndarray,
    *,
    ax: Axes | None = None,
) -> Figure:
    ax = ax if ax is not None else _figure(5.2, 2.4).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    lo, hi = np.percentile(t[(labels == ia) | (labels == ib)], [0.5, 99.5]) if len(t) else (0, 1)
    bins = np.linspace(min(lo, -0.25), max(hi, 1.25), 40)
    for c in (ia, ib):
        ax.hist(t[labels == c], bins=list(bins), alpha=0.6, color=colours[c] / 255.0, label=names[c][:30])
    ax.axvline(0, color="k", lw=0.6, ls=":")
    ax.axvline(1, color="k", lw=0.6, ls=":")
    ax.set_xlabel(f"position: 0 = centroid of {names[ia][:20]}, 1 = centroid of {names[ib][:20]}", fontsize=8)
    ax.set_ylabel("samples")
    ax.legend(fontsize=8, frameon=False)
    return fig


def matrix_heatmap(
    values: np.ndarray, names: Sequence[str], *, label: str = "linear CKA", ax: Axes | None = None
) -> Figure:
    """A square 0..1 similarity matrix (CKA between layers), annotated when small."""
    n = len(names)
    ax = ax if ax is not None else _figure(min(2.5 + 0.5 * n, 11), min(2.0 + 0.45 * n, 10)).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(x)[:28] for x in names], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [str(x)[:28] for x in names], fontsize=7)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if values[i, j] < 0.6 else "black",
                )
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label(label, fontsize=7)
    return fig


def frame_scatter(
    coords: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    colours: np.ndarray,
    *,
    seed: int = 0,
    fig: Figure | None = None,
) -> Figure:
    """Small multiples in one shared frame: one panel per model, same axis limits."""
    names = list(coords)
    fig = fig if fig is not None else _figure(3.2 * len(names) + 0.4, 3.4)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    allc = np.concatenate([coords[n] for n in names])
    lo, hi = np.percentile(allc, 0.5, axis=0), np.percentile(allc, 99.5, axis=0)
    pad = (hi - lo) * 0.05
    order = np.random.default_rng(seed).permutation(len(labels))
    size = float(np.clip(1500 / max(len(labels), 1) ** 0.8, 1.0, 25))
    for ax, n in zip(axes, names):
        c = coords[n]
        ax.scatter(
            c[order, 0],
            c[order, 1],
            c=colours[labels[order]] / 255.0,
            s=size,
            linewidths=0,
            alpha=0.85,
            rasterized=True,
        )
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(n)[:40], fontsize=9)
    return fig


def overlay_scatter(
    reference: np.ndarray,
    others: Mapping[str, np.ndarray],
    *,
    reference_name: str = "reference",
    seed: int = 0,
    ax: Axes | None = None,
) -> Figure:
    """The reference dataset in grey, each compared dataset in its own colour, in one frame."""

    ax = ax if ax is not None else _figure(5.6, 4.4).add_subplot()
    fig = ax.get_figure(root=True)
    assert fig is not None
    size = float(np.clip(1500 / max(len(reference), 1) ** 0.8, 1.0, 25))
    ax.scatter(
        reference[:, 0],
        reference[:, 1],
        s=size,
        c="#9aa3ad",
        linewidths=0,
        alpha=0.6,
        label=f"{reference_name[:30]} ({len(reference)})",
        rasterized=True,
    )
    cols = listed_colours("tab10")
    for i, (name, c) in enumerate(others.items()):
        order = np.random.default_rng(seed + i).permutation(len(c))
        ax.scatter(
            c[order, 0],
            c[order, 1],
            s=size,
            color=cols[(i + 1) % 10],
            linewidths=0,
            alpha=0.7,
            label=f"{str(name)[:30]} ({len(c)})",
            rasterized=True,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7.5, frameon=False)
    return fig
