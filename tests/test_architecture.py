# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The package's layering, read from the source's import statements (lazy and `TYPE_CHECKING` imports included):
model-level code never imports the trainers, `data` never imports `evaluation`, and no two parts import each other."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "trl_presafety"


def _module_name(path: Path) -> str:
    parts = ("trl_presafety", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The `trl_presafety` modules a file imports, anywhere in it (inside functions too)."""
    module = _module_name(path)
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
    return {name for name in found if name.startswith("trl_presafety")}


# The command layer: `cli` names the commands, `scripts` holds them, `pipeline` runs them by name and parses each
# stage's arguments with its command's parser. They may import each other; nothing below them imports them.
COMMAND_LAYER = {"cli", "scripts", "pipeline", "__main__"}


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to: `trl_presafety.judges.cues` -> `judges`."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else parts[0]
    return "commands" if part in COMMAND_LAYER else part


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
