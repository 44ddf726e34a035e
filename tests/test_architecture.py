"""The package's structure: no import cycles between its rooms (top-level modules and subpackages), counting the
imports a module makes when it is loaded (imports inside functions and under TYPE_CHECKING are deferred), no
module over 400 lines, and test folders mirroring the package's."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from helpers import REPO_ROOT

import mixture_of_tokens

PACKAGE = Path(mixture_of_tokens.__file__).parent


def _module_name(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def room_imports() -> dict[str, set[str]]:
    """{room: rooms it imports at load time}."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module, package = _module_name(path)
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if _room(module) != _room(target):
                edges[_room(module)].add(_room(target))
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_between_rooms():
    edges = room_imports()
    assert "layers" in edges or "layers" in {t for targets in edges.values() for t in targets}
    assert find_cycle(edges) is None


def test_layers_import_nothing_else_of_the_package_at_load_time():
    """The feed-forward layers are the bottom floor: config, model and trainer build on them, never the reverse."""
    assert room_imports().get("layers", set()) == set()


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def documented_modules(text: str) -> set[str]:
    """Module paths named in docs/architecture.md's package layout: a folder line ("  layers/") then its files."""
    block = text.split("## Package layout", 1)[1]
    folder, found = "", set()
    for line in block.splitlines():
        words = line.split()
        if not line.startswith("    ") or not words:
            continue
        if words[0] == "src/mixture_of_tokens/":
            folder = ""
        elif words[0].endswith("/") and len(line) - len(line.lstrip()) == 6:
            folder = words[0]
        elif words[0].endswith(".py"):
            found.add(folder + words[0])
    return found


def test_the_architecture_page_names_every_module() -> None:
    modules = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    documented = documented_modules(text)
    assert modules - documented == set(), "modules missing from docs/architecture.md"
    assert documented - modules == set(), "docs/architecture.md names modules that do not exist"
    assert documented_modules(text.replace("        run_lock.py", "        gone.py")) != modules  # the check can fail


def unmirrored_test_folders(tests: Path) -> tuple[set[str], set[str]]:
    """(subpackages without a test folder of their name, test folders naming no subpackage): tests/layers/ holds
    the tests of layers/, and so on; the tests of top-level modules and of the whole package stay in tests/."""
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    return subpackages - folders, folders - subpackages


def test_the_tests_mirror_the_package_folders() -> None:
    assert unmirrored_test_folders(REPO_ROOT / "tests") == (set(), set())


def test_the_mirror_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "test_mot.py").touch()
    missing, stray = unmirrored_test_folders(tmp_path)
    assert "layers" in missing and stray == {"layer"}
