"""reportgen: a self-contained HTML report of what an image model's layers see."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_spec", "loads_spec", "build", "list_layers", "load_model", "load_dataset"]


def __getattr__(name: str):  # lazy: importing reportgen stays fast (no torch at import)
    if name in ("load_spec", "loads_spec"):
        from . import spec

        return getattr(spec, name)
    if name == "build":
        from .pipeline import build

        return build
    if name == "list_layers":
        from .extract import list_layers

        return list_layers
    if name == "load_model":
        from .models import load_model

        return load_model
    if name == "load_dataset":
        from .data import load_dataset

        return load_dataset
    raise AttributeError(name)
