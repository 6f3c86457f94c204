"""Files that ship with reportgen: the report templates and the demo spec.

In the source tree they sit at the top level (``templates/``, ``examples/demo.yaml``); a wheel
maps them into the package (``reportgen/_templates``, ``reportgen/_examples``, see
pyproject.toml), so installed and editable copies find them the same way.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"reportgen is installed without its data files (looked in {', '.join(map(str, candidates))}); reinstall it"
    )


def templates_dir() -> Path:
    return _first(_PACKAGE / "_templates", _PACKAGE.parent / "templates")


def demo_spec() -> Path:
    return _first(_PACKAGE / "_examples" / "demo.yaml", _PACKAGE.parent / "examples" / "demo.yaml")
