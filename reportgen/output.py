"""Output: the one module that writes a report folder, whole or not at all.

The folder is assembled beside the target and renamed into place, so an interrupted build (Ctrl-C,
SIGKILL) leaves the previous report byte-identical and never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import OutputError
from .store.files import remove_stale_temps, temp_name

REPORT_MARKER = "reportgen-report"


def check_output_dir(out: Path) -> None:
    """Fail early (before any work) if the output folder cannot be written or is not ours."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output.dir: {out} exists and is a file; choose a folder")
    if out.exists() and any(out.iterdir()) and not (out / ".reportgen").exists():
        raise OutputError(
            f"output.dir: {out} exists, is not empty and is not a reportgen report; choose a new or empty folder "
            "(it "
            "is replaced whole on each build)"
        )
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(f"output.dir: cannot write in {parent} ({exc.strerror}); choose a writable folder") from None


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` whole, else it is removed."""
    out = Path(out)
    parent = out.resolve().parent
    remove_stale_temps(parent, out.name)
    tmp = parent / temp_name(out.name)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / ".reportgen").write_text(REPORT_MARKER + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = parent / temp_name(out.name).replace(".tmp-", ".old-")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_report(
    out: Path,
    *,
    html: str,
    summary: dict,
    run: dict,
    figures: Mapping[str, bytes] | None = None,
    checks_xml: str | None = None,
) -> None:
    """report.html, summary.json, run.json, figures/ and (with checks) checks.xml, atomically."""
    with atomic_dir(out) as tmp:
        (tmp / "report.html").write_text(html, encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps(summary, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
        )
        (tmp / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        if checks_xml is not None:
            (tmp / "checks.xml").write_text(checks_xml, encoding="utf-8")
        if figures is not None:
            (tmp / "figures").mkdir()
            for name, data in figures.items():
                (tmp / "figures" / name).write_bytes(data)
