"""Facts about the machine and this process: the cores it may use, its peak resident memory; and
``environ_kept``, which hands the process environment back as it was."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM first: ru_maxrss survives execve, so a
    process started by a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def environ_kept() -> Iterator[None]:
    """``os.environ`` as it was before, whatever the libraries a build imports set on the way
    (timm's import sets TORCHINDUCTOR_CACHE_DIR, ``torch.jit.freeze`` may; Ray sets its own): a
    Python API leaves its caller's environment alone."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for k in set(os.environ) - set(before):
            del os.environ[k]
        for k, v in before.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def keeps_environ(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run inside ``environ_kept``: for the Python API's entry points."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with environ_kept():
            return fn(*args, **kwargs)

    return wrapper
