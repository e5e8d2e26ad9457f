"""The package's imports, read statically (ast, every .py under lstm_embed/, module-level and
function-level imports alike): no import cycle between modules, and data flows one way through
the stages (lower stages never import higher ones)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lstm_embed"
ROOT = "lstm_embed"

# stage -> stages it may not import (a module's stage: its first subpackage, or the module name)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    stage: ("tools", "cli")
    for stage in ("frontends", "ir", "kinds", "quantize", "reference", "emit", "targets")
}
FORBIDDEN["kinds"] += ("frontends",)
FORBIDDEN["emit"] += ("frontends",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its body; ``from a import b``
    counts as importing a.b when that is a module, else a."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = imported(tree, name, path.name == "__init__.py", known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def edges_from_package_inits(graph: dict[str, set[str]]) -> None:
    """A module importing a.b.c also runs a and a.b: count those package imports too (a cycle
    through a package's __init__ is a cycle at import time)."""
    for targets in graph.values():
        for target in list(targets):
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph:
                    targets.add(parent)


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    # the checker reads real imports: the Keras frontend imports the kinds, a function-level
    # import included (a checker that found no edges would pass any layout)
    assert "lstm_embed.kinds.lstm" in graph["lstm_embed.frontends.keras.layers.lstm"]
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_lower_stages_do_not_import_higher_ones() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if stage(target) in FORBIDDEN.get(stage(module), ())
    )
    assert not wrong, "\n".join(wrong)
