"""The model's own head: where a model ends in an ImageNet classifier, what it takes each image
for ("looks like: sandal"), from the class names timm ships (no download). Each ImageNet class
that is among the top five predictions of enough samples is a yes/no column: an ImageNet model
rarely puts a Fashion-MNIST boot first as a boot, but "cowboy boot" and "Loafer" are in its top five.

No second forward pass: the classifier is applied to the stored embeddings of the layer that feeds
it (e.g. ``global_pool``), after checking on a few images that this gives the model's own output.
A model without such a head (a random initialisation, no 1,000-way classifier, or no stored layer
that feeds it) is not described this way; the report says why.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .base import Column, Describer, DescribeSource

log = logging.getLogger(__name__)

#: Images the classifier-on-embeddings shortcut is checked on against the model's own output.
CHECK_IMAGES = 4
#: Predictions kept per sample.
TOP = 5
#: At most this many ImageNet classes become columns (those in the most samples' top five).
MAX_CLASSES = 40


@functools.lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in the classifier's order, the first lemma of each
    (what ``timm.data.ImageNetInfo`` gives), read from the files timm ships *without importing
    timm*: a rebuild from cached predictions must not import torch."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("timm is not installed; it ships the ImageNet class names")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        key, _, text = line.partition("\t")
        lemmas[key] = text
    return tuple(lemmas[s].split(",")[0].strip() for s in synsets)


def _top(source: DescribeSource, model: str) -> np.ndarray:
    """(N, TOP) each sample's top ImageNet classes, best first (all -1: no usable head)."""
    import torch

    from ..images import preprocess_image
    from ..models import load_model

    run = source.runs[model]
    spec = source.models[model]
    n = len(source.indices)
    none = np.full((n, TOP), -1, np.int64)
    if run.model.source == "random init" or spec.pixels:
        return none
    loaded = load_model(spec)
    head = getattr(loaded.module, "get_classifier", lambda: None)()
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1000:
        return none
    layer = next((l for l, x in run.embeddings.layers.items() if x.shape[1] == head.in_features), None)
    if layer is None:
        log.info("model %s: no stored layer feeds its classifier (%d features)", model, head.in_features)
        return none
    x = run.embeddings.layers[layer]
    rows = np.arange(min(CHECK_IMAGES, n))
    images = np.stack([preprocess_image(source.dataset.read(int(source.indices[r])), loaded.preprocess) for r in rows])
    w = head.weight.detach().float().cpu().numpy()
    b = head.bias.detach().float().cpu().numpy()
    with torch.inference_mode():
        own = loaded.module(torch.from_numpy(images).to(loaded.device)).float().cpu().numpy()
    ours = np.asarray(x[rows], np.float32) @ w.T + b
    if not np.allclose(ours, own, rtol=1e-2, atol=1e-2 * float(np.abs(own).max() or 1.0)):
        log.info("model %s: the classifier on %s does not give the model's output; no head names", model, layer)
        return none
    out = np.empty((n, TOP), np.int64)
    for s in range(0, n, 8192):
        logits = np.asarray(x[s : s + 8192], np.float32) @ w.T + b
        top = np.argpartition(-logits, TOP, axis=1)[:, :TOP]
        order = np.argsort(-np.take_along_axis(logits, top, axis=1), axis=1, kind="stable")
        out[s : s + 8192] = np.take_along_axis(top, order, axis=1)
    return out


class HeadDescriber(Describer):
    name = "head"
    title = "the model's ImageNet head"
    per_model = True

    def columns(self, source: DescribeSource, model: str | None) -> list[Column]:
        if model is None or model not in source.runs or model not in source.models or not source.dataset.has_images:
            return []  # no model (precomputed embeddings), or no images to check its head on
        run = source.runs[model]
        parts: dict[str, Any] = {"model": model, "embeddings": run.embeddings.key, "rows": source.indices}
        top = source.cached_array("describe-head", parts, lambda: _top(source, model))
        if (top < 0).all():
            return []
        names = imagenet_names()
        counts = np.bincount(top[top >= 0].ravel(), minlength=len(names))
        out = []
        for k in np.argsort(-counts, kind="stable")[:MAX_CLASSES]:
            if counts[k] < 5:
                break
            has = (top == k).any(axis=1)
            values = np.where(has, names[k], "").astype(object)
            out.append(
                Column(self.name, f"ImageNet: {names[k]}", values, True, template="looks like: {value}", quoted=False)
            )
        return out
