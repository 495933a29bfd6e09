"""The import contract: dependencies point down, checked on the source (AST), run by ``make lint``.

Layers, lowest first; a module may import its own layer, anything listed
below it, the standard library and third-party packages::

    agent.core   the ground floor: errors, store, metrics, logs, settings loader, HTTP helpers, access
                 control, output, the consoles' shell (stdlib + third-party only)
    hal          hardware: agent.core
    runtimes     one adapter per engine: hal, agent.core
    models       store, manifest, placement, manager: runtimes, hal, agent.core
    sync         device sync and the edge-hub: models, runtimes, hal, agent.core
    agent        the daemon (everything else under agent/): may import anything

Every import counts: module level, inside a function (lazy) and under
``if TYPE_CHECKING`` (a type-only import still couples the packages).

``EXCEPTIONS`` lists the imports that break the contract today and are known,
each with why it is still there; each is to be removed, not added to. An
exception that no longer matches anything fails the check too, so the list
only shrinks.

Run: ``python -m tests.import_contract [ROOT]`` (exit 1 and one line per
forbidden import); ``tests/test_import_contract.py`` runs it on this tree and
proves it fails on a forbidden import.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: importer layer -> the project layers it may import (its own included)
ALLOWED: dict[str, frozenset[str]] = {
    "agent.core": frozenset({"agent.core"}),
    "hal": frozenset({"agent.core", "hal"}),
    "runtimes": frozenset({"agent.core", "hal", "runtimes"}),
    "models": frozenset({"agent.core", "hal", "runtimes", "models"}),
    "sync": frozenset({"agent.core", "hal", "runtimes", "models", "sync"}),
    "agent": frozenset({"agent.core", "hal", "runtimes", "models", "sync", "agent"}),
}
PACKAGES = ("agent", "hal", "runtimes", "models", "sync")


@dataclass(frozen=True)
class Exception_:
    importer: str  # fnmatch pattern on the importing module
    imported: str  # fnmatch pattern on the imported module
    why: str


# Known breaches, each with why it is still there; none today (issue 12 moved the daemon's wiring out of
# sync/ and what the hub shared with the daemon onto agent.core). A new one needs a reason, not a habit.
EXCEPTIONS: tuple[Exception_, ...] = ()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int


def layer_of(module: str) -> str | None:
    """The contract layer a project module belongs to (``agent.core`` before ``agent``)."""
    if module == "agent.core" or module.startswith("agent.core."):
        return "agent.core"
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every project import in one file, relative ones resolved."""
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from agent import config`` imports agent.config; ``from agent import __version__``, agent
            names = [_submodule_or_package(root, base, a.name) for a in node.names]
        for name in dict.fromkeys(names):
            if layer_of(name) is not None:
                yield Import(importer, name, path, node.lineno)


def _submodule_or_package(root: Path, base: str, name: str) -> str:
    """``from pkg import x``: ``pkg.x`` when x is a module or package of the tree, else ``pkg``."""
    candidate = f"{base}.{name}"
    rel = Path(*candidate.split("."))
    if (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists():
        return candidate
    return base


def _excused(imp: Import, exceptions: tuple[Exception_, ...]) -> Exception_ | None:
    for exc in exceptions:
        if fnmatch.fnmatchcase(imp.importer, exc.importer) and fnmatch.fnmatchcase(
            imp.imported, exc.imported
        ):
            return exc
    return None


def check(root: Path, exceptions: tuple[Exception_, ...] = EXCEPTIONS) -> list[str]:
    """One message per forbidden import, then one per exception that no longer matches anything."""
    problems: list[str] = []
    used: set[Exception_] = set()
    for package in PACKAGES:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            for imp in imports_of(root, path):
                src, dst = layer_of(imp.importer), layer_of(imp.imported)
                if src is None or dst is None or dst in ALLOWED[src]:
                    continue
                excused = _excused(imp, exceptions)
                if excused is not None:
                    used.add(excused)
                    continue
                rel = imp.path.relative_to(root)
                problems.append(
                    f"{rel}:{imp.line}: {imp.importer} ({src}) imports {imp.imported} ({dst}); "
                    f"{src} may import only {', '.join(sorted(ALLOWED[src]))}"
                )
    for exc in exceptions:
        if exc not in used:
            problems.append(
                f"import contract: the exception {exc.importer} -> {exc.imported} matches nothing any more; "
                "remove it from tests/import_contract.py"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = check(root)
    for line in problems:
        print(line)
    if problems:
        print(f"import contract: {len(problems)} problem(s); see tests/import_contract.py for the layers")
        return 1
    print(f"import contract: ok ({len(EXCEPTIONS)} known exceptions, listed in tests/import_contract.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
