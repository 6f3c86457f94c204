"""Mosaics: thumbnails composed directly in NumPy at their map positions (``image_mosaic``) or
snapped to a grid by linear assignment (``grid_mosaic``), each bordered in its class colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mosaic:
    pixels: np.ndarray  # (H, W, 3) uint8
    rows: np.ndarray  # sample rows shown, in draw order
    positions: np.ndarray  # (len(rows), 2) top-left (x, y) of each bordered tile
    tile: int  # tile side including the border


def _bordered(thumbs: np.ndarray, colours: np.ndarray, border: int) -> np.ndarray:
    n, t = thumbs.shape[0], thumbs.shape[1]
    out = np.empty((n, t + 2 * border, t + 2 * border, 3), np.uint8)
    out[:] = colours[:, None, None, :]
    out[:, border : border + t, border : border + t] = thumbs
    return out


def image_mosaic(
    coords: np.ndarray,
    thumbnails: np.ndarray,
    labels: np.ndarray,
    colours: np.ndarray,
    *,
    cap: int,
    seed: int,
    border: int = 2,
    canvas: int | None = None,
    among: np.ndarray | None = None,
) -> Mosaic:
    """Thumbnails at their 2-D positions, bordered in the class colour.

    Overlap is handled deliberately: at most ``cap`` samples (a seeded random subset), drawn in
    a seeded random order so no class is systematically on top; the canvas grows with the
    number shown (about 1.7 tiles of width per sqrt(sample)).
    """
    pool = np.arange(len(coords)) if among is None else np.asarray(among)
    n = len(pool)
    rng = np.random.default_rng(seed)
    rows = pool[np.sort(rng.choice(n, cap, replace=False))] if n > cap else pool
    rows = rows[rng.permutation(len(rows))]
    t = thumbnails.shape[1]
    tile = t + 2 * border
    side = canvas or int(np.clip(np.sqrt(len(rows)) * tile * 1.7, 480, 3200))
    xy = coords[rows].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1)
    pos = ((xy - lo) / span * (side - tile)).round().astype(int)
    pos[:, 1] = (side - tile) - pos[:, 1]  # y up, as in the scatter plot
    img = np.full((side, side, 3), 255, np.uint8)
    tiles = _bordered(
        np.asarray(thumbnails[np.sort(rows)])[np.argsort(np.argsort(rows))], colours[labels[rows]], border
    )
    for (x, y), tile_px in zip(pos, tiles):
        img[y : y + tile, x : x + tile] = tile_px
    return Mosaic(img, rows, pos, tile)


def grid_mosaic(
    coords: np.ndarray,
    thumbnails: np.ndarray,
    labels: np.ndarray,
    colours: np.ndarray,
    *,
    cap: int,
    seed: int,
    border: int = 2,
    among: np.ndarray | None = None,
) -> Mosaic:
    """The map snapped to a regular grid by linear assignment: every chosen sample shown once, no overlap."""
    from scipy.optimize import linear_sum_assignment

    pool = np.arange(len(coords)) if among is None else np.asarray(among)
    n = len(pool)
    g = int(np.floor(np.sqrt(min(n, cap))))
    m = g * g
    rng = np.random.default_rng(seed)
    rows = pool[np.sort(rng.choice(n, m, replace=False))] if n > m else pool
    xy = coords[rows].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    xy = (xy - lo) / np.where(hi - lo > 0, hi - lo, 1)
    gx, gy = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g)
    cells = np.stack([gx.ravel(), 1 - gy.ravel()], 1)  # row 0 at the top = high y
    cost = ((xy[:, None, :] - cells[None, :, :]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    t = thumbnails.shape[1]
    tile = t + 2 * border
    img = np.full((g * tile, g * tile, 3), 255, np.uint8)
    picked = rows[r]
    order = np.argsort(picked, kind="stable")  # read thumbnails in ascending rows (they may be made on demand)
    thumbs = np.empty((len(picked),) + tuple(thumbnails.shape[1:]), np.uint8)
    thumbs[order] = thumbnails[picked[order]]
    tiles = _bordered(thumbs, colours[labels[picked]], border)
    pos = np.stack([(c % g) * tile, (c // g) * tile], 1)
    for (x, y), tp in zip(pos, tiles):
        img[y : y + tile, x : x + tile] = tp
    return Mosaic(img, rows[r], pos, tile)
