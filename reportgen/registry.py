"""One kind of registry for every plug-in table: reducers, analyses, sections and dataset kinds.

timm's ``@register_model`` idea: one table per kind of plug-in, read by everything that needs the
names (the spec's unions, the check metrics, the report's sections, "did you mean"), so a plug-in
is declared once, in its own file, and never listed by hand anywhere else. The order of
registration is kept (it is the report's order); ``before`` places an entry ahead of another.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ReportgenError, SpecError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Plug-ins of one kind by name, in registration order (a read-only mapping to everyone else).

    ``what`` names the kind in messages ("reducer", "dataset kind"); ``error`` is the error an
    unknown name raises in ``lookup`` (a ``SpecError`` for names a spec gives).
    """

    def __init__(self, what: str, *, error: type[ReportgenError] = SpecError) -> None:
        self.what = what
        self.error = error
        self._items: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._items)})"

    def register(self, name: str, item: T, *, replace: bool = False, before: str | None = None) -> T:
        """Add ``item`` under ``name`` (last, or ahead of ``before``); a taken name needs ``replace``."""
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"a {self.what} named {name!r} is registered already; pass replace=True to override it")
        self._items.pop(name, None)
        if before is not None and before in self._items:
            items = list(self._items.items())
            at = [k for k, _ in items].index(before)
            items.insert(at, (name, item))
            self._items = dict(items)
        else:
            self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def lookup(self, name: str) -> T:
        """The entry named ``name``, or ``self.error`` with a "did you mean" (or the names there are)."""
        try:
            return self._items[name]
        except KeyError:
            hint = difflib.get_close_matches(str(name), list(self._items), n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else f"; expected one of {', '.join(self._items)}"
            raise self.error(f"unknown {self.what} {name!r}{more}") from None

    def select(self, keep: Callable[[T], bool]) -> list[T]:
        """The entries ``keep`` accepts, in order."""
        return [v for v in self._items.values() if keep(v)]
