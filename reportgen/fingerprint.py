"""Code fingerprints: caches know the code that made what they hold (joblib's ``Memory`` rule).

Every cached thing (embeddings, neighbour graphs, maps, probes, figures) is keyed by its inputs
*and* by a fingerprint of the code that computes it. The fingerprint of a module is the digest of
its code (its syntax tree: a comment or a reformatting changes nothing) and of every reportgen
module it imports, transitively - read from the source with ``ast`` (imports inside functions
included), never imported - so no list of "which files matter" is kept by hand: change
``reducers/base.py`` and every reducer's maps are refitted, change a plot helper and only the
figures are redrawn. Asking for a fingerprint imports nothing (no torch, no library).

What is followed: ``import reportgen.x`` and ``from reportgen.x import y`` (relative forms too),
except under ``if TYPE_CHECKING:`` (imports for annotations only, which shape no result).
``from .pkg import name`` follows ``pkg/name.py`` when that is a module, else ``pkg/__init__.py``;
importing a package follows its ``__init__.py`` and what that imports. Libraries outside reportgen
are not followed (their versions are recorded with each report).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import types
from pathlib import Path

#: The folder of the reportgen package whose modules fingerprints follow.
PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = "reportgen"

_DIGESTS: dict[tuple[str, int, int], str] = {}
_IMPORTS: dict[tuple[str, int, int], tuple[str, ...]] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size)


def file_digest(path: Path) -> str:
    """SHA-256 of a Python file's code, memoised by path, modification time and size: of its syntax
    tree (``ast.dump``, without line numbers), so that comments, blank lines and formatting - which
    change no result - recompute nothing; docstrings and every literal count. A file that does not
    parse is digested by its bytes."""
    key = _stat_key(path)
    if key not in _DIGESTS:
        raw = path.read_bytes()
        try:
            code = ast.dump(ast.parse(raw, filename=str(path))).encode()
        except (SyntaxError, ValueError):
            code = raw
        _DIGESTS[key] = hashlib.sha256(code).hexdigest()
    return _DIGESTS[key]


def module_file(name: str) -> Path | None:
    """The source file of reportgen module ``name`` (a package: its ``__init__.py``), or None."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    rel = Path(*name.split(".")[1:]) if name != PACKAGE else Path()
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py") if rel.parts else None, PACKAGE_DIR / rel / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                todo += list(child.orelse if isinstance(child, ast.If) else [])
                continue
            todo.append(child)
    return out


def imported_modules(path: Path, module: str) -> tuple[str, ...]:
    """The reportgen modules that the source file ``path`` (module ``module``) imports, anywhere in it."""
    key = _stat_key(path)
    if key in _IMPORTS:
        return _IMPORTS[key]
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = _package_of(path, module)
    found: list[str] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            for alias in node.names:  # `from . import x` / `from .pkg import mod` import the submodule
                sub = f"{target}.{alias.name}"
                found.append(sub if module_file(sub) is not None and alias.name != "*" else target)
    out = tuple(dict.fromkeys(m for m in found if module_file(m) is not None))
    _IMPORTS[key] = out
    return out


def closure(module: str) -> list[str]:
    """``module`` and every reportgen module it imports, transitively, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        path = module_file(m)
        if path is None:
            continue
        seen.add(m)
        todo += imported_modules(path, m)
    return sorted(seen)


def _parts_digest(part: object) -> list[str]:
    """Digests of the code ``part`` names: a reportgen module (by name or object) with its imports,
    or a class or function defined elsewhere (a user's plug-in): its file, plus the reportgen
    modules that file imports."""
    if isinstance(part, str):
        if module_file(part) is None:
            raise LookupError(f"no source file for module {part!r}")
        return [f"{m}:{file_digest(module_file(m))}" for m in closure(part)]  # type: ignore[arg-type]
    name = part.__name__ if isinstance(part, types.ModuleType) else getattr(part, "__module__", "")
    if module_file(name) is not None:
        return _parts_digest(name)
    try:
        source = inspect.getsourcefile(part)  # type: ignore[arg-type]
    except TypeError:
        source = None
    if source and os.path.exists(source):
        path = Path(source)
        own = [f"{path.name}:{file_digest(path)}"]
        return own + [d for m in imported_modules(path, name or path.stem) for d in _parts_digest(m)]
    try:  # defined interactively: its source text, if Python kept it
        return [hashlib.sha256(inspect.getsource(part).encode()).hexdigest()]  # type: ignore[arg-type]
    except (OSError, TypeError):
        return [hashlib.sha256(repr(part).encode()).hexdigest()]


def code_fingerprint(*parts: object) -> str:
    """One short digest of the code of every part (reportgen module names, modules, classes,
    functions) and of every reportgen module each of them imports, transitively."""
    h = hashlib.sha256()
    for digest in sorted({d for part in parts for d in _parts_digest(part)}):
        h.update(digest.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def array_digest(*arrays: object) -> str:
    """A short content digest of NumPy arrays (dtype, shape and bytes): part of a cache key."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.data.cast("B"))
    return h.hexdigest()[:32]
