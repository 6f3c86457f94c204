"""Facts about the machine and this process: the cores it may use, its peak resident memory; and
``environ_kept`` and ``threads_kept``, which hand the process environment and the native thread
pools' sizes back as they were."""

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


@contextlib.contextmanager
def threads_kept() -> Iterator[None]:
    """The sizes of the OpenMP and BLAS thread pools loaded now as they were before: numba's OpenMP
    layer (UMAP) sets the shared libgomp's thread count to every core, which is torch's count too,
    so a caller who ran ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) got 2 back after a build."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it there is nothing to hand back
        yield
        return
    with threadpool_limits(limits=None):  # no limit set; the pools' sizes restored on exit
        yield


def keeps_process(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run inside ``environ_kept`` and ``threads_kept``: for the Python API's entry points."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with environ_kept(), threads_kept():
            return fn(*args, **kwargs)

    return wrapper
