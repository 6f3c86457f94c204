"""TensorBoard Embedding Projector interop: write a projector folder, read one back.

Format (TensorBoard's rules): ``tensors.tsv`` (or float32 ``.bytes``), ``metadata.tsv`` (one
column: no header; several: a header row), a sprite image (a square grid of thumbnails, at most
8,192 px a side) and ``projector_config.pbtxt``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .images import BadImage, read_image_file

SPRITE_MAX = 8192


def _tsv_cell(v: object) -> str:
    return str(v).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_metadata(path: Path, columns: dict[str, list]) -> None:
    names = list(columns)
    n = len(columns[names[0]])
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if len(names) > 1:
            f.write("\t".join(_tsv_cell(c) for c in names) + "\n")
        for i in range(n):
            f.write("\t".join(_tsv_cell(columns[c][i]) for c in names) + "\n")


def sprite_layout(n: int, thumb: int) -> tuple[int, int]:
    """(grid side, tile px) so that side * tile <= 8,192: thumbnails shrink when there are many."""
    side = math.ceil(math.sqrt(n))
    tile = min(thumb, SPRITE_MAX // side)
    if tile < 1:
        raise DataError(f"export-projector: {n:,} samples cannot fit a {SPRITE_MAX} px sprite; export fewer samples")
    return side, tile


def write_sprite(path: Path, thumbnails: np.ndarray) -> tuple[int, int]:
    from PIL import Image

    n, t = len(thumbnails), thumbnails.shape[1]
    side, tile = sprite_layout(n, t)
    canvas = np.full((side * tile, side * tile, 3), 255, np.uint8)
    for i in range(n):
        im = np.asarray(thumbnails[i])
        if tile != t:
            im = np.asarray(Image.fromarray(im).resize((tile, tile), Image.Resampling.LANCZOS))
        r, c = divmod(i, side)
        canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = im
    Image.fromarray(canvas).save(path)
    return side, tile


def export_projector(
    out: Path,
    tensors: dict[str, np.ndarray],
    metadata: dict[str, list],
    thumbnails: np.ndarray | None,
    *,
    binary: bool = False,
) -> list[str]:
    """Write one projector entry per tensor (e.g. per layer) sharing metadata and sprite."""
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    write_metadata(out / "metadata.tsv", metadata)
    sprite = None
    if thumbnails is not None and len(thumbnails):
        side, tile = write_sprite(out / "sprite.png", thumbnails)
        sprite = tile
        if tile < thumbnails.shape[1]:
            notes.append(
                f"sprite thumbnails shrunk to {tile} px to fit TensorBoard's {SPRITE_MAX} px limit ({side}x{side} grid)"
            )
    entries = []
    for name, x in tensors.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "tensor"
        x = np.asarray(x, np.float32)
        if binary:
            fname = f"{safe}.bytes"
            x.tofile(out / fname)
        else:
            fname = f"{safe}.tsv"
            np.savetxt(out / fname, x, delimiter="\t", fmt="%.9g")
        e = [f'  tensor_name: "{name}"', f'  tensor_path: "{fname}"', '  metadata_path: "metadata.tsv"']
        if binary:
            e.append(f"  tensor_shape: {x.shape[0]}\n  tensor_shape: {x.shape[1]}")
        if sprite:
            e.append(
                f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {sprite}\n    single_image_dim: '
                f"{sprite}\n  }}"
            )
        entries.append("embeddings {\n" + "\n".join(e) + "\n}\n")
    (out / "projector_config.pbtxt").write_text("".join(entries), encoding="utf-8")
    return notes


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ProjectorEntry:
    tensor_name: str
    tensor_path: Path
    metadata_path: Path | None
    sprite_path: Path | None
    sprite_dim: tuple[int, int] | None
    tensor_shape: tuple[int, ...] | None


def _sprite_image(block: str) -> str | None:
    m = re.search(r'image_path\s*:\s*"([^"]*)"', block)
    return m.group(1) if m else None


def parse_config(path: Path) -> list[ProjectorEntry]:
    """The subset of projector_config.pbtxt that TensorBoard and add_embedding write."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"dataset.path: cannot read {path} ({exc.strerror})") from None
    root = path.parent
    entries = []
    for block in re.findall(r"embeddings\s*\{((?:[^{}]|\{[^{}]*\})*)\}", text):

        def field(name: str, b: str = block) -> str | None:
            m = re.search(rf'\b{name}\s*:\s*"((?:[^"\\]|\\.)*)"', b)
            return m.group(1) if m else None

        sprite = re.search(r"sprite\s*\{([^{}]*)\}", block)
        dims = tuple(int(v) for v in re.findall(r"single_image_dim\s*:\s*(\d+)", sprite.group(1))) if sprite else None
        shape = tuple(
            int(v) for v in re.findall(r"\btensor_shape\s*:\s*(\d+)", re.sub(r"sprite\s*\{[^{}]*\}", "", block))
        )
        tpath = field("tensor_path")
        if not tpath:
            continue

        def resolve(p: str | None) -> Path | None:
            return None if not p else (root / p).resolve()

        entries.append(
            ProjectorEntry(
                tensor_name=field("tensor_name") or tpath,
                tensor_path=(root / tpath).resolve(),
                metadata_path=resolve(field("metadata_path")),
                sprite_path=resolve(_sprite_image(sprite.group(1))) if sprite else None,
                sprite_dim=(dims[0], dims[1]) if dims and len(dims) >= 2 else None,
                tensor_shape=shape or None,
            )
        )
    if not entries:
        raise DataError(f"dataset.path: {path} has no embeddings entry with a tensor_path")
    return entries


def read_tensor(entry: ProjectorEntry) -> np.ndarray:
    p = entry.tensor_path
    if not p.exists():
        raise DataError(f"dataset.path: tensor file not found: {p}")
    if p.suffix == ".bytes":
        if not entry.tensor_shape or len(entry.tensor_shape) != 2:
            raise DataError(f"dataset.path: {p} is binary but the config gives no tensor_shape")
        x = np.fromfile(p, dtype=np.float32)
        if x.size != entry.tensor_shape[0] * entry.tensor_shape[1]:
            raise DataError(f"dataset.path: {p} holds {x.size} floats, not {entry.tensor_shape}")
        return x.reshape(entry.tensor_shape)
    return read_vectors_tsv(p)


def read_vectors_tsv(p: Path) -> np.ndarray:
    try:
        x = np.loadtxt(p, delimiter="\t", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DataError(f"dataset: {p} is not a TSV of numbers ({str(exc)[:100]})") from None
    return x


def read_metadata(path: Path, n: int) -> dict[str, list[str]]:
    """TensorBoard's rule: one column means no header; several mean a header row."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise DataError(f"dataset: metadata file {path} is empty")
    rows = [l.split("\t") for l in lines]
    if len(rows[0]) == 1 and len(rows) == n:
        return {"label": [r[0] for r in rows]}
    header, body = rows[0], rows[1:]
    if len(body) != n:
        raise DataError(f"dataset: {path} has {len(body)} metadata rows for {n} vectors")
    return {h: [r[i] if i < len(r) else "" for r in body] for i, h in enumerate(header)}


def read_sprite(path: Path, dim: tuple[int, int], n: int) -> np.ndarray:
    """Cut a sprite into (n, h, w, 3) uint8 thumbnails (row-major, as TensorBoard lays it out)."""
    try:
        img = read_image_file(path)
    except BadImage as exc:
        raise DataError(f"dataset: sprite {path}: {exc}") from None
    w, h = dim
    per_row = img.shape[1] // w
    if per_row < 1 or (n + per_row - 1) // per_row * h > img.shape[0]:
        raise DataError(f"dataset: sprite {path} is too small for {n} images of {w}x{h}")
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, per_row)
        out[i] = img[r * h : (r + 1) * h, c * w : (c + 1) * w]
    return out
