"""The package's rooms and which may import which (docs/architecture.md), checked on the source with ``ast``.

Every ``import`` of the package's own modules counts, also those inside functions (a function-local import is how a
cycle hides), so a cycle or an import running back up fails here before it fails a user.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_supcon"

# room -> the rooms it may import (besides itself). Lower rooms first; the command (cli) is imported by no room.
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "losses": {"utils"},
    "metrics": {"utils"},
    "optim": {"utils"},
    "nets": {"utils"},
    "data": {"losses", "utils"},
    "encoder_files": {"nets", "utils"},
    "plugins": {"nets", "utils"},
    "models": {"encoder_files", "losses", "metrics", "nets", "optim", "plugins", "utils"},
    "evaluation": {"metrics", "models", "utils"},
    "callbacks": {"evaluation", "models", "utils"},
    "evaluate": {"callbacks", "evaluation", "metrics", "models", "utils"},
    "cli": {"callbacks", "data", "encoder_files", "losses", "models", "nets", "plugins", "utils"},
    "__init__": {"callbacks", "data", "encoder_files", "losses", "models", "nets"},
    "__main__": {"cli"},
}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports anywhere (``from a.b import c`` counts ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_supcon"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lightning_supcon"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        graph[name] = {target for target in _imports(path) if target in modules and target != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or ``None`` (depth-first search, grey/black colouring)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _is_package_init(module: str, graph: dict[str, set[str]]) -> bool:
    return any(other.startswith(f"{module}.") for other in graph)


class TestImports:
    def test_no_import_cycle(self) -> None:
        # A package __init__ re-exports its modules; its own modules importing a sibling through the package name
        # is no cycle of ideas, so the __init__ edges to their own submodules are left out.
        graph = {
            name: {t for t in targets if not (_is_package_init(name, _graph_cache) and t.startswith(f"{name}."))}
            for name, targets in _graph_cache.items()
        }
        assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"

    def test_the_cycle_check_can_fail(self) -> None:
        assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
        assert _cycle({"a": {"b"}, "b": set()}) is None

    def test_every_room_imports_only_the_rooms_below_it(self) -> None:
        wrong = sorted(
            f"{name} -> {target}"
            for name, targets in _graph_cache.items()
            for target in targets
            if _room(target) != _room(name) and _room(target) not in ALLOWED[_room(name)]
        )
        assert not wrong, "imports running back up (see ALLOWED and docs/architecture.md):\n" + "\n".join(wrong)

    def test_every_room_is_declared(self) -> None:
        assert {_room(name) for name in _graph_cache} <= set(ALLOWED)

    def test_the_library_never_imports_the_command(self) -> None:
        assert all("cli" not in allowed for room, allowed in ALLOWED.items() if room != "__main__")


class TestFiles:
    @pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
    def test_no_file_over_the_limit(self, path: Path) -> None:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by idea"


_graph_cache = _graph()
