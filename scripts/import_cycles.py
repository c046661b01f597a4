"""Fail on any import cycle between modules of the ``xlbridge`` package.

Every ``import`` counts: at module level, inside a function (a
function-local import that dodges a cycle at run time is still a cycle in
the design) and under ``if TYPE_CHECKING:`` (two modules that need each
other's types are one module, or want a small Protocol both can import).

Usage: ``python scripts/import_cycles.py [package_dir]``; exit status 1
and one line per cycle when there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, here: str, is_package: bool) -> set[str]:
    """Names of the modules ``tree`` imports (at any depth)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    modules = {
        module_name(root, path): path for path in sorted(root.rglob("*.py"))
    }
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = imported(tree, name, path.name == "__init__.py")
        # Importing a.b.c also runs a and a.b, but a package's own
        # __init__ importing its children is not a design cycle worth
        # failing on: only edges to concrete modules count.
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "xlbridge").resolve()
    edges = graph(root)
    bad = [
        c for c in cycles(edges)
        # a package __init__ that re-exports its own modules is fine
        if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)
    ]
    for component in bad:
        print("import cycle: " + " <-> ".join(component))
    if not bad:
        print(f"no import cycles among {len(edges)} modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
