"""The package's shape: imports point one way (no cycle, even through imports inside
functions), and no module grows past about 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "karyosearch"
MAX_LINES = 520


def module_name(path: Path) -> str:
    parts = ("karyosearch", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in it (module level, in functions, under
    TYPE_CHECKING): `from .x import y` counts as x.y where that is a module, else x."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(path, name, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # search.engine imports model.embed only inside SearchIndex.query_images
    assert "karyosearch.model.embed" in graph["karyosearch.search.engine"]
    assert "karyosearch.model.checkpoint" in graph["karyosearch"]  # inside load_encoder
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_point_one_way() -> None:
    """base -> data -> model -> train / search / karyotype / evaluation -> server -> cli: no
    layer imports one that stands above it."""
    layer = {"data": 1, "model": 2, "train": 3, "search": 3, "karyotype": 3, "evaluation": 3}
    layer["server"] = 4
    layer["cli"] = 5

    def rank(name: str) -> int:
        parts = name.split(".")
        return layer.get(parts[1], 0) if len(parts) > 1 else 0

    wrong = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if a != "karyosearch" and rank(b) > rank(a)
    ]
    assert not wrong


def test_no_module_is_too_long() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: c for n, c in long.items() if c > MAX_LINES}
