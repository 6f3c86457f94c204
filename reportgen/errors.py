"""The project's error hierarchy.

Every error a user can cause is one of these; the CLI catches them in one place and
prints ``message`` on one line with the class's exit code (see ``ExitStatus``).
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Process exit codes of the ``reportgen`` command (documented in the README)."""

    OK = 0
    ERROR = 1  # runtime error: data, model, output, interrupted
    USAGE = 2  # bad command line or invalid spec
    CHECKS_FAILED = 3  # the report was written but a quality check failed
    INTERRUPTED = 130  # Ctrl-C


class ReportgenError(Exception):
    """Base class: a problem the user can act on, with a one-line message."""

    exit_status = ExitStatus.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ReportgenError):
    exit_status = ExitStatus.USAGE


class SpecError(ReportgenError):
    """The spec is invalid; ``errors`` holds every problem found (path, message, line)."""

    exit_status = ExitStatus.USAGE

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class DataError(ReportgenError):
    pass


class ModelError(ReportgenError):
    pass


class OutputError(ReportgenError):
    pass


class CacheError(ReportgenError):
    pass
