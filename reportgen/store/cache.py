"""The cache of computed artefacts (maps, neighbour graphs, probes, figures), keyed by what made them.

A key is a digest of three things: the parameters that shape the artefact, the fingerprint of the
code that computes it (``reportgen.fingerprint``: the module and every reportgen module it imports), and
the keys of the artefacts it was computed from (a map fitted on a neighbour graph carries that
graph's key, the graph carries the embeddings' key), as a build system's target carries its
sources' hashes. Change a stage's code or any of its inputs and that stage is recomputed; every
other one is read back.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .files import content_key, default_cache_dir, write_cached

log = logging.getLogger(__name__)

T = TypeVar("T")


class Cache:
    """Computed artefacts (maps, neighbour graphs, probe results, figures), keyed by content and code.

    A key is a digest of the inputs that determine the artefact *and* the fingerprint of the code
    that computes it (``reportgen.fingerprint``), so changing a stage's code recomputes that stage
    only. Entries live in ``<cache>/<kind>/<key>.<ext>``; every write is atomic and best-effort (an
    unwritable cache costs time, never a build). ``computed`` and ``reused`` count entries per kind.
    A disabled cache (``--no-cache``) reads nothing and writes nothing.
    """

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.computed: Counter = Counter()
        self.reused: Counter = Counter()

    @staticmethod
    def key(kind: str, parts: dict[str, Any], code: str, inputs: Iterable[str] = ()) -> str:
        """The key of an artefact of ``kind``: its ``parts``, the ``code`` fingerprint that makes it
        and the keys of the artefacts it is computed from (``inputs``, in order)."""
        return content_key({"kind": kind, "code": code, "inputs": list(inputs), **parts})

    def _path(self, kind: str, key: str, ext: str) -> Path:
        return self.root / kind / f"{key}.{ext}"

    def _hit(self, kind: str, value: T) -> T:
        if value is not None:
            self.reused[kind] += 1
        return value

    def get_arrays(self, kind: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """Arrays and a JSON ``meta`` saved by ``put_arrays``, or None (a damaged entry is removed)."""
        if not self.enabled:
            return None
        path = self._path(kind, key, "npz")
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files if k != "__meta__"}
                meta = json.loads(str(z["__meta__"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            log.warning("cache entry %s/%s is unreadable (%s); recomputing", kind, key, exc)
            path.unlink(missing_ok=True)
            return None
        return self._hit(kind, (arrays, meta))

    def put_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.computed[kind] += 1
        if not self.enabled:
            return
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.asarray(json.dumps(meta, default=str)), **arrays)  # type: ignore[arg-type]
        if not write_cached(self._path(kind, key, "npz"), buf.getvalue()):
            log.warning("cannot write the cache in %s; %s will be recomputed next time", self.root / kind, kind)

    def array(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The one array cached under ``key``, or ``compute()``'s, stored there."""
        hit = self.get_arrays(kind, key)
        if hit is not None:
            return hit[0]["value"]
        value = compute()
        self.put_arrays(kind, key, {"value": value}, {})
        return value

    def json(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """The JSON value cached under ``key``, or ``compute()``'s, stored there (a None is not a hit)."""
        value = self.get_json(kind, key)
        if value is None:
            value = compute()
            self.put_json(kind, key, value)
        return value

    def get_json(self, kind: str, key: str) -> Any:
        if not self.enabled:
            return None
        try:
            return self._hit(kind, json.loads(self._path(kind, key, "json").read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError):
            return None

    def put_json(self, kind: str, key: str, value: Any) -> None:
        self.computed[kind] += 1
        if self.enabled:
            write_cached(self._path(kind, key, "json"), json.dumps({"value": value}).encode("utf-8"))

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        if not self.enabled:
            return None
        try:
            return self._hit(kind, self._path(kind, key, "bin").read_bytes())
        except OSError:
            return None

    def put_bytes(self, kind: str, key: str, data: bytes) -> None:
        self.computed[kind] += 1
        if self.enabled:
            write_cached(self._path(kind, key, "bin"), data)
