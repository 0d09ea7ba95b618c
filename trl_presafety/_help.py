# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety <command> --help` in well under a second: the command's own options, read from the source of its
dataclasses (no torch, transformers or trl import), `presafety_*` first, then a pointer to `--help_all`, the full
argparse help with every option of TRL's and transformers' configs (which imports them: ~10-50 s).

The dataclasses of a command are those its `make_parser()` passes to `make_script_parser`; each is found through the
imports of the script's module, so a new command or field needs no list kept here. A dataclass outside this package
(TRL's `SFTConfig`, `ModelConfig`, transformers' `TrainingArguments`) is named at the end, not expanded.
"""

import ast
import textwrap
from pathlib import Path
from typing import Any


PACKAGE = "trl_presafety"
PACKAGE_DIR = Path(__file__).resolve().parent
HELP_ALL_FLAGS = ("--help_all", "--help-all")
CONFIG_HELP = (
    "YAML recipe: any option below (and of the configs named at the end) as a key; options given on the command line "
    "override it."
)
WIDTH = 119


class _Module:
    """A module of this package, parsed once: its tree, classes, constants and imported names."""

    _cache: dict[str, "_Module"] = {}

    def __init__(self, name: str):
        relative = name.split(".")[1:]
        path = PACKAGE_DIR.joinpath(*relative)
        self.path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        self.name = name
        self.package = name if self.path.name == "__init__.py" else name.rsplit(".", 1)[0]
        self.tree = ast.parse(self.path.read_text(encoding="utf-8"))
        self.classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}
        self.constants: dict[str, ast.expr] = {}
        self.imports: dict[str, tuple[str, str]] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.constants.setdefault(node.targets[0].id, node.value)
            elif isinstance(node, ast.ImportFrom):
                source = self._absolute(node)
                for alias in node.names:
                    self.imports.setdefault(alias.asname or alias.name, (source, alias.name))

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        base = parts[: len(parts) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    @classmethod
    def get(cls, name: str) -> "_Module":
        if name not in cls._cache:
            cls._cache[name] = cls(name)
        return cls._cache[name]


def _resolve(module: _Module, name: str, depth: int = 0) -> tuple[_Module | None, str, Any]:
    """Where `name` (as seen from `module`) is defined: `(module, name, class or constant node)`, or `(None,
    "package.Name", None)` for a name from outside this package."""
    if name in module.classes:
        return module, name, module.classes[name]
    if name in module.constants and name not in module.imports:
        return module, name, module.constants[name]
    if name in module.imports and depth < 8:
        source, original = module.imports[name]
        if source == PACKAGE or source.startswith(PACKAGE + "."):
            try:
                return _resolve(_Module.get(source), original, depth + 1)
            except (OSError, SyntaxError):
                pass
        return None, f"{source.split('.')[0]}.{original}", None
    return None, name, None


def _text(module: _Module, node: ast.expr | None, depth: int = 0) -> str | None:
    """A help string from its node: a literal, a constant defined elsewhere, or an f-string of such parts."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and depth < 4:
        where, _, value = _resolve(module, node.id)
        if where is not None and isinstance(value, ast.expr):
            return _text(where, value, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(module, node.left, depth), _text(module, node.right, depth)
        if left is not None and right is not None:
            return left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                inner = _text(module, value.value, depth + 1) if isinstance(value, ast.FormattedValue) else None
                parts.append(inner if inner is not None else "...")
        return "".join(parts)
    return None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return ast.unparse(node)


def _choices(module: _Module, node: ast.expr, depth: int = 0) -> Any:
    """The choices of a field: a literal, a constant (`ANCHORS`), or `list(...)` / `tuple(...)` of one."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("list", "tuple", "sorted") and node.args:
        return _choices(module, node.args[0], depth)
    if isinstance(node, ast.Name) and depth < 6:
        where, _, value = _resolve(module, node.id)
        return _choices(where, value, depth + 1) if where is not None and isinstance(value, ast.expr) else None
    value = _literal(node)
    return value if isinstance(value, list | tuple) else None


def _default(module: _Module, node: ast.expr) -> Any:
    if isinstance(node, ast.Name):
        where, _, value = _resolve(module, node.id)
        if where is not None and isinstance(value, ast.expr):
            return _literal(value)
    return _literal(node)


def _field(module: _Module, statement: ast.AnnAssign) -> dict[str, Any]:
    info: dict[str, Any] = {"name": statement.target.id, "type": ast.unparse(statement.annotation)}
    value = statement.value
    keywords: dict[str, ast.expr] = {}
    if isinstance(value, ast.Call):
        keywords = {k.arg: k.value for k in value.keywords if k.arg}
        metadata = keywords.get("metadata")
        if isinstance(metadata, ast.Dict):
            keywords.update(
                {k.value: v for k, v in zip(metadata.keys, metadata.values) if isinstance(k, ast.Constant)}
            )
        if "default" in keywords:
            info["default"] = _default(module, keywords["default"])
        elif "default_factory" in keywords:
            factory = ast.unparse(keywords["default_factory"])
            info["default"] = {"list": [], "dict": {}}.get(factory, f"{factory}()")
    elif value is not None:
        info["default"] = _literal(value)
    info["help"] = _text(module, keywords.get("help")) or ""
    if "choices" in keywords:
        choices = _choices(module, keywords["choices"])
        info["choices"] = choices if isinstance(choices, list | tuple) else None
    return info


def _fields(module: _Module, name: str, external: list[str], depth: int = 0) -> dict[str, dict[str, Any]]:
    """The fields of dataclass `name` of `module`, its bases' first (those of this package; others go to
    `external`)."""
    where, qualified, node = _resolve(module, name)
    if where is None or not isinstance(node, ast.ClassDef):
        if qualified not in external:
            external.append(qualified)
        return {}
    fields: dict[str, dict[str, Any]] = {}
    for base in node.bases:
        if isinstance(base, ast.Name) and depth < 8:
            fields.update(_fields(where, base.id, external, depth + 1))
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            if "ClassVar" not in ast.unparse(statement.annotation):
                fields[statement.target.id] = _field(where, statement)
    return fields


def command_dataclasses(module_name: str) -> tuple[_Module, list[str]] | None:
    """The script module and the names of the dataclasses its `make_parser()` passes to `make_script_parser`, or
    `None` for a command with a parser of its own (plain argparse: its full help is already fast)."""
    module = _Module.get(module_name)
    make_parser = next(
        (n for n in module.tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_parser"), None
    )
    if make_parser is None:
        return None
    tuples = {}
    for node in ast.walk(make_parser):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    tuples[target.id] = node.value
    for node in ast.walk(make_parser):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "make_script_parser"
            and len(node.args) > 1
        ):
            types = node.args[1]
            if isinstance(types, ast.Name):
                types = tuples.get(types.id)
            if isinstance(types, ast.Tuple):
                return module, [e.id for e in types.elts if isinstance(e, ast.Name)]
    return None


def _usage(module: _Module, command: str) -> str:
    """The command's usage line (`usage=` of `make_script_parser`, else the recipe usage)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "usage" for t in node.targets):
            text = _text(module, node.value)
            if text:
                return text.replace("%(prog)s", f"trl-presafety {command}")
    default = _text(*_resolve(_Module.get(f"{PACKAGE}.scripts.arguments"), "RECIPE_USAGE")[::2])
    return (default or "%(prog)s [--config RECIPE.yaml] [--<field> VALUE ...]").replace(
        "%(prog)s", f"trl-presafety {command}"
    )


def _describe(field: dict[str, Any]) -> str:
    kind = field["type"].replace("typing.", "").replace(" | None", "").replace("Optional[", "").rstrip("]")
    flag = f"--{field['name']}" + ("" if kind == "bool" else f" {kind.upper().split('[')[0]}")
    extra = []
    if field.get("choices"):
        extra.append("choices: " + ", ".join(str(c) for c in field["choices"]))
    if "default" in field:
        extra.append(
            f"default: {field['default']!r}" if isinstance(field["default"], str) else f"default: {field['default']}"
        )
    text = field["help"].strip() + (f" ({'; '.join(extra)})" if extra else "")
    body = textwrap.fill(text, WIDTH - 6, initial_indent="      ", subsequent_indent="      ")
    return f"  {flag}\n{body}"


def short_help(command: str, module_name: str, description: str) -> str | None:
    """The short help of a command, or `None` when it cannot be read from the sources (then the full help is shown)."""
    found = command_dataclasses(module_name)
    if found is None:
        return None
    module, names = found
    external: list[str] = []
    fields: dict[str, dict[str, Any]] = {}
    for name in names:
        fields.update(_fields(module, name, external))
    presafety = [f for n, f in fields.items() if n.startswith("presafety_")]
    own = [f for n, f in fields.items() if not n.startswith("presafety_")]
    lines = [f"usage: {_usage(module, command)}", "", description, "", "  --config RECIPE.yaml"]
    lines.append(textwrap.fill(CONFIG_HELP, WIDTH - 6, initial_indent="      ", subsequent_indent="      "))
    if presafety:
        lines += ["", "PreSafety options (the pre-CoT safety head):"] + [_describe(f) for f in presafety]
    if own:
        lines += ["", f"Options of `trl-presafety {command}`:"] + [_describe(f) for f in own]
    tail = "Also accepted: every option of " + ", ".join(f"`{n}`" for n in external) + "." if external else ""
    lines += [
        "",
        textwrap.fill(
            (tail + " " if tail else "")
            + f"`trl-presafety {command} --help_all` lists every option with its type and default (slower: it imports "
            "the configs, and with them torch).",
            WIDTH,
        ),
    ]
    return "\n".join(lines)
