"""The Ray cluster a job runs on: joined (``address``) or started for the job, with one-line errors
for a missing Ray, an address nothing listens at and a token the cluster refuses; Ray's own
logging and progress bars quieted while reportgen shows its own."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import ReportgenError


class RayError(ReportgenError):
    """Ray is missing, unreachable, or a job failed."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayError(
            "execution.engine: ray needs Ray Data; pip install 'reportgen[ray]' (or set execution.engine: local)"
        ) from None
    return ray


class Connection:
    """``ray.init`` for this job (a local cluster when no address is given), shut down after it if
    this process started it; Ray Data's own logging and progress bars quieted meanwhile."""

    def __init__(self, address: str | None, num_cpus: int | None) -> None:
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            # No address (and no RAY_ADDRESS, Ray's own convention): a new local cluster for this job,
            # as documented - not whichever cluster 'ray start' last left running on this machine,
            # which is what ray.init() alone would join.
            self.address = self.address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
                "address": self.address or "local",
            }
            if self.address:
                probe_address(self.address)
            elif self.num_cpus:
                kwargs["num_cpus"] = self.num_cpus
            quiet = logging.getLogger("ray")
            before = quiet.level
            quiet.setLevel(
                logging.ERROR
            )  # start-up notices (e.g. that the job's own cluster uses token authentication)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                if not self.address:
                    raise RayError(
                        f"execution: cannot start a local Ray cluster for the job ({first}); run 'ray start "
                        "--head' "
                        "and pass --address auto"
                    ) from None
                raise RayError(
                    f"execution.address: cannot join the Ray cluster at {self.address!r} ({first}); check that it "
                    "runs ('ray status') and, "
                    "as 'ray start' turns on token authentication, that this machine has RAY_AUTH_MODE=token and the "
                    "head's token "
                    "(its ~/.ray/auth_token, or RAY_AUTH_TOKEN)"
                ) from None
            finally:
                quiet.setLevel(before)
            self.started = True
        self.ray = ray
        self.loggers = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(
            logging.ERROR
        )  # plan and progress chatter; reportgen shows its own progress
        ctx = ray.data.DataContext.get_current()
        self.progress = ctx.enable_progress_bars
        ctx.enable_progress_bars = False
        return ray

    def __exit__(self, *exc: object) -> None:
        self.ray.data.DataContext.get_current().enable_progress_bars = self.progress
        for name, level in self.loggers.items():
            logging.getLogger(name).setLevel(level)
        if self.started:
            self.ray.shutdown()


def preflight(address: str | None) -> None:
    """Ray Data importable and the cluster reachable, or a one-line error now."""
    import_ray()
    if address:
        probe_address(address)


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (``ray.init`` would retry for minutes)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"execution.address: {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RayError(
            f"execution.address: cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); start one with "
            "'ray start --head' "
            "or leave the address out to run a local cluster"
        ) from None
    if "://" not in address and not _token_accepted(hostport):
        raise RayError(
            f"execution.address: the Ray cluster at {address!r} refuses this machine's token; 'ray start' turns on "
            "token authentication: "
            "set RAY_AUTH_MODE=token here and give this machine the head's token (its ~/.ray/auth_token, or "
            "RAY_AUTH_TOKEN)"
        )


def _token_accepted(hostport: str, wait: float = 3.0) -> bool:
    """False only when the cluster's GCS answers that this process's token is missing or wrong (it
    answers at once). ``ray.init`` would retry for seconds, logging a warning each time, and end with
    a message that does not name the token. Any other outcome - no answer within ``wait``, another
    error, a Ray without this (internal) client - is left for ``ray.init`` to report."""
    import threading

    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
        from ray.exceptions import AuthenticationError
    except ImportError:
        return True
    refused: list[bool] = []

    def probe() -> None:
        try:
            GcsClient(address=hostport)
        except AuthenticationError:
            refused.append(True)
        except Exception:
            pass

    t = threading.Thread(target=probe, name="reportgen-ray-token-probe", daemon=True)
    t.start()
    t.join(wait)
    return not refused


def user_error(exc: BaseException) -> ReportgenError | None:
    """The reportgen error (bad data, a broken model) inside Ray's wrappers, if there is one."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ReportgenError) and type(e).__module__.startswith("reportgen"):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None
