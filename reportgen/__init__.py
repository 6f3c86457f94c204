"""reportgen: a self-contained HTML report of what an image model's layers see.

    import reportgen
    spec = reportgen.load_spec("spec.yaml", overrides=["dataset.limit=300"])
    result = reportgen.build(spec, output_dir="out")

Plug-ins: ``reportgen.register_reducer``, ``reportgen.register_analysis`` and
``reportgen.register_dataset_kind`` add a reducer, an analysis (a report section) or a dataset
kind without changing reportgen's source.
"""

from __future__ import annotations

from ._version import __version__

__all__ = [
    "__version__",
    "load_spec",
    "loads_spec",
    "build",
    "list_layers",
    "load_model",
    "load_dataset",
    "register_reducer",
    "register_analysis",
    "register_dataset_kind",
]

_LAZY = {  # importing reportgen stays fast: no torch, no pydantic until a name is used
    "load_spec": "specification",
    "loads_spec": "specification",
    "build": "pipeline",
    "list_layers": "embed.layers",
    "load_model": "models",
    "load_dataset": "datasets",
    "register_reducer": "reducers",
    "register_analysis": "analyses",
    "register_dataset_kind": "datasets",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"reportgen.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'reportgen' has no attribute {name!r}")
