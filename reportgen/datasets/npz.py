"""A .npz file with arrays ``images`` (N,H,W[,C]) and ``labels`` (N,); read without pickle."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import DataError
from ..params import ResolvedPath
from .base import Dataset, DatasetParams, array_dataset


class NpzDataset(DatasetParams):
    """A .npz with arrays ``images`` (N,H,W[,C]) and ``labels`` (N,)."""

    kind: Literal["npz"] = "npz"
    path: ResolvedPath
    class_names: list[str] | None = None


def load(spec: NpzDataset) -> Dataset:
    try:
        with np.load(spec.path, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise DataError(
                    f"dataset.path: {spec.path} has no array {missing[0]!r} (it has {sorted(z.files)}); save "
                    "arrays "
                    "'images' and 'labels'"
                )
            images, labels = z["images"], z["labels"]
    except FileNotFoundError:
        raise DataError(f"dataset.path: file not found: {spec.path}") from None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(
            f"dataset.path: {spec.path}: cannot read without pickle ({exc}); store plain numeric arrays"
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"dataset.path: {spec.path} is not a readable .npz ({str(exc)[:100]})") from None
    return array_dataset(spec.name or spec.path.stem, "npz", images, labels, spec.class_names, f"{spec.path.stem}-")
