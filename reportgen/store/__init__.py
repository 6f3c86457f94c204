"""The store: embeddings on disk (``embeddings``), the cache of what is computed from them
(``cache``, keyed with ``reportgen.fingerprint``'s code fingerprints) and atomic file writes
(``files``)."""

from __future__ import annotations

from .cache import Cache
from .embeddings import FORMAT, EmbeddingStore, EntryWriter
from .files import atomic_write_bytes, content_key, default_cache_dir, file_sha256, remove_stale_temps, temp_name

__all__ = [
    "Cache",
    "EmbeddingStore",
    "EntryWriter",
    "FORMAT",
    "atomic_write_bytes",
    "content_key",
    "default_cache_dir",
    "file_sha256",
    "remove_stale_temps",
    "temp_name",
]
