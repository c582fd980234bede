"""Who imports whom inside the layer (mailcore), and the import cycles among them.

`python scripts/module_graph.py` prints one line per module: `module -> imported, ...` (imports under
`if TYPE_CHECKING:` left out: they never run), then every cycle found. tests/unit/test_layer_imports.py
holds the layer to no cycle and to boto3 only in the adapters."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

LAYER = Path(__file__).resolve().parent.parent / "layers" / "common"
PACKAGE = "mailcore"


def layer_modules(root: Path = LAYER) -> dict[str, Path]:
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs: those under `if TYPE_CHECKING:` are skipped."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for inner in node.body:
                inner._skip = True  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and not _under_skip(node, tree):
            yield node


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _under_skip(node: ast.AST, tree: ast.AST) -> bool:
    for parent in ast.walk(tree):
        if getattr(parent, "_skip", False) and any(child is node for child in ast.walk(parent)):
            return True
    return False


def imported_names(name: str, path: Path) -> set[str]:
    """The absolute names of every module `name` imports (a `from a import b` counts `a.b` when b is a module)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(root: Path = LAYER) -> dict[str, set[str]]:
    modules = layer_modules(root)
    return {
        name: {other for other in imported_names(name, path) if other in modules and other != name}
        for name, path in modules.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def main() -> None:
    edges = graph()
    for name in sorted(edges):
        targets = sorted(edges[name])
        print(f"{name} -> {', '.join(targets) if targets else '(nothing in the layer)'}")
    found = cycles(edges)
    print(f"\ncycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))


if __name__ == "__main__":
    main()
