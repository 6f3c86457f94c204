"""Code fingerprints: caches know the code that made what they hold (joblib's ``Memory`` rule).

Every cached thing (embeddings, neighbour graphs, maps, probes, figures) is keyed by its inputs
*and* by a fingerprint of the source code of the modules that compute it. Change the t-SNE
schedule, a pooling step or a plot, rebuild, and that stage is recomputed while the others are
reused. A fingerprint hashes source files (read, never imported), so asking for one costs no
import of torch or any other library.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
from pathlib import Path

_FILES: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _FILES:
        _FILES[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _FILES[key]


def _source_of(part) -> str:
    """A digest of the code ``part`` names: a module name (``"reportgen.images"``), a module, a class
    or a function (its whole module file when there is one, else its source text)."""
    if isinstance(part, str):
        spec = importlib.util.find_spec(part)
        if spec is None or not spec.origin or not os.path.exists(spec.origin):
            raise LookupError(f"no source file for module {part!r}")
        return _file_digest(spec.origin)
    try:
        path = inspect.getsourcefile(part)
    except TypeError:
        path = None
    if path and os.path.exists(path):
        return _file_digest(path)
    try:  # defined interactively: its source text, if Python kept it
        return hashlib.sha256(inspect.getsource(part).encode()).hexdigest()
    except (OSError, TypeError):
        return hashlib.sha256(repr(part).encode()).hexdigest()


def code_fingerprint(*parts) -> str:
    """One short digest of the code of every part (module names, modules, classes, functions)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(_source_of(part).encode())
    return h.hexdigest()[:16]


def array_digest(*arrays) -> str:
    """A short content digest of NumPy arrays (dtype, shape and bytes): part of a cache key."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:32]
