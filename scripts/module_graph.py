"""Who imports whom inside the layer (mailcore), and the import cycles among them.

`python scripts/module_graph.py` prints one line per module: `module -> imported, ...` (imports under
`if TYPE_CHECKING:` left out: they never run), then every cycle found; `--longest N` prints the N
longest functions of the layer and of the handlers instead. tests/unit/test_layer_imports.py
holds the layer to no cycle and to boto3 only in the adapters."""

from __future__ import annotations

import ast
import sys
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


def function_lengths(paths: list[Path]) -> list[tuple[int, str]]:
    """(lines from `def` to the function's last line, `path:line qualified.name`) for every function
    and method in the files, nested ones too, longest first."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append((lines, f"{path}:{child.lineno} {prefix}{child.name}"))
                visit(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, path, f"{prefix}{child.name}.")
            else:
                visit(child, path, prefix)

    for path in paths:
        visit(ast.parse(path.read_text(), str(path)), path, "")
    return sorted(found, key=lambda row: (-row[0], row[1]))


def handler_modules(root: Path = LAYER.parent.parent) -> list[Path]:
    return sorted((root / "functions").glob("*/app.py"))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--longest":
        repository = LAYER.parent.parent
        for kind, paths in (("layer", list(layer_modules().values())), ("handlers", handler_modules())):
            print(f"{kind}:")
            for lines, where in function_lengths(paths)[: int(sys.argv[2])]:
                print(f"  {lines:3} {where.removeprefix(str(repository) + '/')}")
        return
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
