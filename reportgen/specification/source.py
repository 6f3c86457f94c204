"""Where a spec comes from: its text, safely parsed (no alias bombs, one-line YAML errors with line
and column), the ``--set`` overrides applied to it, and the line of every key (``Positions``), so
that any later error can name the line it is about."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecError

#: Upper bound on YAML nodes after alias expansion ("billion laughs" guard).
MAX_YAML_NODES = 100_000
#: Upper bound on spec file size.
MAX_SPEC_BYTES = 1_000_000


class Positions:
    """YAML path -> line number, from the composed node tree."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.lines: dict[tuple, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                self.lines.setdefault(path + (key,), k.start_mark.line + 1)
                self._walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _count_nodes(node: yaml.Node) -> int:
    """Nodes after alias expansion, memoised so the count itself cannot blow up."""
    memo: dict[int, int] = {}

    def count(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = 1  # cycle guard
        total = 1
        if isinstance(n, yaml.MappingNode):
            total += sum(count(k) + count(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(count(v) for v in n.value)
        memo[key] = min(total, MAX_YAML_NODES * 10)
        return memo[key]

    return count(node)


def parse_yaml(text: str, *, source: str = "spec") -> tuple[Any, Positions]:
    """Safe-load YAML, refusing alias bombs; errors name the line."""
    if len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: file is larger than {MAX_SPEC_BYTES // 1000} kB; is this really a spec?")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    if node is not None and _count_nodes(node) > MAX_YAML_NODES:
        raise SpecError(
            f"{source}: YAML expands to more than {MAX_YAML_NODES:,} nodes through aliases; refusing (alias bomb?)"
        )
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader does not construct ('=', !!python/...)
        raise _yaml_error(exc, source) from None
    return data, Positions(node)


def _yaml_error(exc: Exception, source: str) -> SpecError:
    """PyYAML's error as one line: where (line, column) and what, without its excerpt of the text."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return SpecError(f"{source}: malformed YAML{where}: {' '.join(str(problem).split())}")


def format_loc(loc: tuple[Any, ...]) -> str:
    """A YAML path as a user writes it: ``reducers[1].tsne.perplexity``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            not str(part)
            or not str(part).isprintable()
            or str(part) != str(part).strip()
            or any(c in str(part) for c in ".[]")
        ):
            out += (
                f"[{str(part)!r}]"  # a key that would not read as one (empty, a line break, a dot): quoted, on one line
            )
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def apply_overrides(data: Any, overrides: list[str]) -> Any:
    """``a.b=value`` / ``models[0].input_size=128`` -> set in the raw mapping (value parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set dataset.limit=500")
        key, _, raw = item.partition("=")
        parts = [p for p in re.split(r"\.|\[(\d+)\]", key.strip()) if p]
        if not parts:
            raise SpecError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            index: Any = int(part) if part.isdigit() else part
            if isinstance(node, list):
                if not isinstance(index, int) or index >= len(node):
                    raise SpecError(f"--set {item!r}: {format_loc(tuple(parts[:i]))} has no item {part}")
            elif isinstance(node, dict):
                if not last and index not in node:
                    node[index] = {}
            else:
                raise SpecError(f"--set {item!r}: {format_loc(tuple(parts[:i]))} is not a mapping or list")
            if last:
                node[index] = value
            else:
                node = node[index]
    return data


@dataclass(frozen=True)
class SpecSource:
    """The text a spec was read from and the overrides applied to it."""

    path: str | None
    text: str
    overrides: tuple[str, ...]
    effective: str | None  # the YAML after the overrides (None without overrides)
    positions: Positions = field(default_factory=lambda: Positions(None), repr=False, compare=False)

    def where(self, path: tuple[Any, ...]) -> str:
        """`` (line N)`` for a YAML path of this spec, or nothing when its line is not known."""
        line = self.positions.line(path) if self.positions.lines else None
        return f" (line {line})" if line else ""

    @property
    def shown(self) -> str:
        """What the report shows as the spec that was built."""
        return self.effective if self.effective is not None else self.text
