"""One sub-folder per class (torchvision's ImageFolder convention); any Pillow-readable image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError
from ..images import IMAGE_EXTENSIONS
from ..params import ResolvedPath
from .base import Dataset, DatasetParams, display_id, path_dataset


class ImageFolderDataset(DatasetParams):
    """One sub-folder per class (torchvision's ImageFolder convention)."""

    kind: Literal["image_folder"] = "image_folder"
    path: ResolvedPath


def load(spec: ImageFolderDataset) -> Dataset:
    root = spec.path
    if not root.exists():
        raise DataError(f"dataset.path: folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"dataset.path: {root} is not a folder; image_folder needs one sub-folder per class")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"dataset.path: {root} has no class sub-folders; put each class's images in root/<class>/")
    paths: list[Path] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root / cname, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    found.append(Path(dirpath) / fn)
        if not found:
            raise DataError(
                f"dataset.path: class folder {root / cname} has no images ({', '.join(IMAGE_EXTENSIONS[:5])} ...); "
                "add images or remove the folder"
            )
        paths += found
        labels += [ci] * len(found)
    return path_dataset(
        spec.name or root.name,
        "image_folder",
        root,
        paths,
        np.asarray(labels, dtype=np.int64),
        tuple(display_id(c) for c in classes),
    )
