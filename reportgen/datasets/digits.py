"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .base import Dataset, DatasetParams, array_dataset


class DigitsDataset(DatasetParams):
    """scikit-learn's bundled 8x8 digits (1,797 images, offline)."""

    kind: Literal["digits"] = "digits"


def load(spec: DigitsDataset) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return array_dataset(spec.name or "digits", "digits", images, d.target, [str(i) for i in range(10)], "digits-")
