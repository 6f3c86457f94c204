"""The section registry: how each analysis's finding is shown in the report.

An analysis (``reportgen.analyses``) computes a frozen finding of numbers and sample rows; its
section, registered under the same name, turns it into a template context, drawing the figures
on the way (``context``), and may add a sentence to its layer's header (``lead``). The render
loops over the findings and asks the section of each; a finding without a section is not shown.
To add one, copy ``sections/axes.py`` and its template ``templates/sections/axes.html``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import ReportgenError
from ..fingerprint import code_fingerprint
from ..registry import Registry
from .view import View


class Section:
    """How one analysis's finding is presented: ``template`` (``sections/<name>.html``, rendered
    with ``s``, the context, and ``l``, the layer) and ``context``, which draws its figures."""

    name: ClassVar[str]  # the analysis it presents
    template: ClassVar[str]

    def context(self, finding: Any, view: View) -> dict[str, Any] | None:
        """The template's context (``s``); None: the section is not shown."""
        return None

    def lead(self, finding: Any) -> str | None:
        """A sentence for the top of the layer's part of the report (None: nothing to add)."""
        return None

    @classmethod
    def fingerprint(cls) -> str:
        """The code that draws this section's figures: its module and what that imports."""
        return code_fingerprint(cls)


SECTIONS: Registry[type[Section]] = Registry("section", error=ReportgenError)


def register_section(cls: type[Section] | None = None, *, replace: bool = False) -> Any:
    """Add a section class to the registry (usable as a decorator), under its analysis's name."""

    def add(c: type[Section]) -> type[Section]:
        for attr in ("name", "template"):
            if not hasattr(c, attr):
                raise TypeError(f"section {c.__name__} must define {attr!r}")
        if c.context is Section.context:
            raise TypeError(f"section {c.name} must implement context()")
        return SECTIONS.register(c.name, c, replace=replace)

    return add if cls is None else add(cls)


def unregister_section(name: str) -> None:
    SECTIONS.unregister(name)
