# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The package's layering, read from the source's import statements (lazy and `TYPE_CHECKING` imports included):
model-level code never imports the trainers, `data` never imports `evaluation`, and no two parts import each other;
in `benchmarks/`, no module imports another that imports it back (directly or around a longer circle), and the package
never imports the benchmarks."""

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trl_presafety"
BENCHMARKS = ROOT / "benchmarks"


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The modules of `root`'s package a file imports, anywhere in it (inside functions too); `from . import x` names
    the module `x`."""
    module = _module_name(path, root)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import data` is a module
    return {name for name in found if name in _known_modules(root)}


@functools.cache
def _known_modules(root: Path) -> frozenset[str]:
    return frozenset(_module_name(path, root) for path in root.rglob("*.py"))


# The command layer: `cli` names the commands, `scripts` holds them, `pipeline` runs them by name and parses each
# stage's arguments with its command's parser. They may import each other; nothing below them imports them.
COMMAND_LAYER = {"cli", "scripts", "pipeline", "__main__"}


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to: `trl_presafety.judges.cues` -> `judges`."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else parts[0]
    return "commands" if part in COMMAND_LAYER else part


@functools.cache  # read once: the source does not change during a test session
def part_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = _part(_module_name(path))
        for target in _imports(path):
            if _part(target) != source:
                graph[source].add(_part(target))
    return graph


def test_relative_imports_resolve():
    assert _imports(PACKAGE / "gate.py") >= {"trl_presafety.anchors", "trl_presafety.modeling"}
    assert "trl_presafety.judges.base" in _imports(PACKAGE / "judges" / "__init__.py")


@pytest.mark.parametrize("part", ["modeling", "anchors", "gate", "judges", "data", "evaluation", "labeling"])
def test_model_level_and_inference_code_never_imports_the_trainers(part):
    assert "trainer" not in part_graph()[part]


@pytest.mark.parametrize(
    "part", ["modeling", "anchors", "gate", "trainer", "judges", "data", "evaluation", "labeling"]
)
def test_library_code_never_imports_the_command_layer(part):
    assert "commands" not in part_graph()[part]


def test_data_does_not_import_evaluation():
    assert "evaluation" not in part_graph()["data"]


def test_no_two_parts_import_each_other():
    graph = part_graph()
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, ())})
    assert cycles == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph` (module -> modules it imports): its strongly connected components of more than
    one module, and the modules that import themselves."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@functools.cache
def benchmark_graph() -> dict[str, set[str]]:
    graph = {}
    for path in BENCHMARKS.rglob("*.py"):
        module = _module_name(path, BENCHMARKS)
        # A package's `__init__` is imported with any of its modules: only its own imports count
        graph[module] = {target for target in _imports(path, BENCHMARKS) if target != module}
    return graph


def test_cycle_finder_finds_circles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "benchmarks.efficacy.data" in benchmark_graph()["benchmarks.efficacy.methods"]  # `from . import data`


def test_no_import_circles_in_the_benchmarks():
    assert _cycles(benchmark_graph()) == []


def test_the_package_never_imports_the_benchmarks():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level]
        assert not any(name.split(".")[0] == "benchmarks" for name in names), path
