"""Datasets: a dataset spec -> a ``Dataset`` (lazy images, labels, class names, ids, metadata).

Each kind is one module of this package, registered in ``DATASET_KINDS``; to add one, copy
``datasets/npz.py`` and call ``register_dataset_kind(Params, load)``.
"""

from __future__ import annotations

from ..errors import DataError
from . import csv_manifest, digits, embeddings, idx, image_folder, npz
from .base import (
    DATASET_KINDS,
    Dataset,
    DatasetParams,
    get_kind,
    is_precomputed,
    label_codes,
    register_dataset_kind,
    unregister_dataset_kind,
)
from .selection import Selection, select_samples

register_dataset_kind(digits.DigitsDataset, digits.load)
register_dataset_kind(image_folder.ImageFolderDataset, image_folder.load)
register_dataset_kind(csv_manifest.CsvDataset, csv_manifest.load)
register_dataset_kind(idx.IdxDataset, idx.load)
register_dataset_kind(npz.NpzDataset, npz.load)
register_dataset_kind(embeddings.EmbeddingsDataset, embeddings.load_embeddings, precomputed=True)
register_dataset_kind(embeddings.ProjectorDataset, embeddings.load_projector, precomputed=True)


def load_dataset(spec: DatasetParams) -> Dataset:
    """Open the dataset a spec names; check that it can make a report (>= 2 samples, >= 2 classes)."""
    ds = get_kind(spec.kind).load(spec)
    if len(ds) == 0:
        raise DataError(f"dataset: {ds.name} has no samples")
    present = int((ds.counts > 0).sum())
    if present < 2:
        raise DataError(
            f"dataset: {ds.name} has only one class ({ds.class_names[int(ds.labels[0])]!r}); a report compares "
            "classes, so give at least two"
        )
    return ds


__all__ = [
    "DATASET_KINDS",
    "Dataset",
    "DatasetParams",
    "Selection",
    "load_dataset",
    "select_samples",
    "register_dataset_kind",
    "unregister_dataset_kind",
    "is_precomputed",
    "label_codes",
]
