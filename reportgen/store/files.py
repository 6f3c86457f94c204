"""Files written whole or not at all, the names of their temporaries, and content keys.

Every writer of reportgen (the embedding store, the caches, the report folder) goes through
these: a temporary beside the target, then a rename; a temporary records its writer's process id
so that one left by a dead process can be told from a concurrent build's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reportgen"


def temp_name(prefix: str) -> str:
    """A unique temporary name that records the writing process: ``.<prefix>.tmp-<pid>-<random>``."""
    return f".{prefix}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temporary beside it, then a rename."""
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_cached(path: Path, data: bytes) -> bool:
    """Best-effort atomic write into a cache folder (made if missing): an unwritable cache only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return True
    except OSError:
        return False


def remove_stale_temps(folder: Path, prefix: str = "") -> int:
    """Remove temporary folders left by processes that died (SIGKILL, power loss); keep live ones."""
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for p in entries:
        m = re.match(r"^\.(.+)\.(?:tmp|old)-(\d+)-[0-9a-f]{8}$", p.name)
        if not m or (prefix and m.group(1) != prefix):
            continue
        pid = int(m.group(2))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # the writer is alive: a concurrent build
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed += 1
    return removed


def content_key(parts: dict) -> str:
    """A 32-hex-digit digest of a JSON-able mapping (keys sorted): the identity of what it describes."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
