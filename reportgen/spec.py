"""``reportgen.spec``: the spec's short, stable import path (``from reportgen.spec import load_spec``).

The stage itself is the package ``reportgen.specification`` (its YAML source, its messages, the
``ReportSpec`` that the registries shape); this module only hands its public names on.
"""

from __future__ import annotations

from .specification import *  # noqa: F403 - every public name, by the shorter path
from .specification import __all__ as __all__
