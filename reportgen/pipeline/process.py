"""The build's clock and its manners in the process: wall time and peak memory per stage
(``Stages``), and the process-wide housekeeping only the command line opts into (``ProcessHooks``).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .._version import __version__
from ..machine import peak_rss_mb
from ..streaming import release_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessHooks:
    """Process-wide housekeeping a build may do; the CLI turns it on, the Python API leaves it off.

    ``reset_peaks``: restart the kernel's peak-RSS mark at each stage (``/proc/self/clear_refs``), so
    every stage reports its own peak; ``trim_memory``: hand freed heap back to the OS after each
    stage (glibc's ``malloc_trim``), so RSS does not ratchet up stage by stage.
    """

    reset_peaks: bool = False
    trim_memory: bool = False

    def reset_peak(self) -> None:
        if not self.reset_peaks:
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def trim(self) -> None:
        if not self.trim_memory:
            return
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@dataclass
class _Open:
    """A stage that has not ended, and the highest peak seen inside it."""

    name: str
    peak: float = 0.0


class Stages:
    """Wall time and peak RSS per stage. With ``ProcessHooks.reset_peaks`` a stage's peak is its own;
    without, it is the process's peak so far. Peaks nest: an outer stage's covers its inner ones."""

    def __init__(self, hooks: ProcessHooks | None = None) -> None:
        self.hooks = hooks or ProcessHooks()
        self.timings: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self._open: list[_Open] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        now = peak_rss_mb()
        for outer in self._open:
            outer.peak = max(outer.peak, now)
        self.hooks.reset_peak()
        entry = _Open(name)
        self._open.append(entry)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            peak = max(entry.peak, peak_rss_mb())
            release_all()  # pages of memory-mapped layers this stage read: not carried into the next
            self.hooks.trim()
            self._open.remove(entry)
            for outer in self._open:
                outer.peak = max(outer.peak, peak)
            self.timings[name] = self.timings.get(name, 0.0) + dt
            self.rss[name] = max(self.rss.get(name, 0.0), peak)
            log.info("stage %-28s %7.2f s  peak RSS %6.0f MB", name, dt, peak)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "reportgen": __version__}
    for pkg in (
        "numpy",
        "torch",
        "timm",
        "scikit-learn",
        "openTSNE",
        "umap-learn",
        "matplotlib",
        "Pillow",
        "Jinja2",
        "pydantic",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
