# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Snippets that cannot rot: every fenced code block of README.md and docs/ is checked, page by page.

- `python` blocks run, each as its own script, in one fresh process per run of consecutive blocks, in a temporary
  folder that stands for the repository root (the package, recipes, configs and benchmarks are linked in; what a block
  writes stays there), so a block may read what an earlier block of its page saved.
- `bash` / `shell` / `sh` blocks: each command is checked the cheapest way that proves it right (see
  `check_command`); a command no rule knows fails the test.
- `text`, `console`, `diff`, `yaml`, `json` blocks are read, not run (output excerpts, layouts, fragments); `yaml`
  and `json` must parse. A block without a language fails.

Hub models named in a block become a tiny local model of the same template family. A block is skipped only by a
visible comment right before it in the Markdown: `<!-- not tested: <why> -->`.
"""

import argparse
import contextlib
import importlib
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch
import yaml


REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
# What the temporary "repository root" of a page links in; a block's outputs (runs/...) stay in the temporary folder
LINKED = ("trl_presafety", "recipes", "accelerate_configs", "benchmarks", "Makefile", "pyproject.toml")

RUN_LANGUAGES = {"python"}
COMMAND_LANGUAGES = {"bash", "shell", "sh"}
READ_LANGUAGES = {"text", "console", "diff", "yaml", "json"}
SKIP_MARKER = re.compile(r"^<!-- not tested: (?P<reason>\S.*?) -->$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")

# Hub models a block may name -> the tiny model style standing in for them (same chat-template family)
HUB_MODELS = {
    "Qwen/Qwen3-8B": "qwen3",
    "Qwen/Qwen3-0.6B": "qwen3",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": "r1",
}
# Training in a `python` block stops after this many optimizer steps: the test checks that the code runs
MAX_TRAINING_STEPS = 4
HARNESS = f"""\
# Written by tests/test_docs.py: runs the given block files in order, each with fresh globals, in this process
import runpy
import sys
import traceback

import trl_presafety  # first, as in a block: it quiets an optional-kernel warning of transformers' imports
import transformers


_post_init = transformers.TrainingArguments.__post_init__


def _capped(self):  # every TRL config and the classifier's TrainingArguments reach this
    if self.max_steps <= 0 or self.max_steps > {MAX_TRAINING_STEPS}:
        self.max_steps = {MAX_TRAINING_STEPS}
    _post_init(self)


transformers.TrainingArguments.__post_init__ = _capped

for path in sys.argv[1:]:
    print(f"=== running {{path}}", flush=True)
    try:
        runpy.run_path(path, run_name="__main__")
    except BaseException:
        traceback.print_exc()
        print(f"=== FAILED {{path}}", flush=True)
        sys.exit(1)
"""


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip_reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT) if self.path.is_relative_to(REPO_ROOT) else self.path}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the skip marker written right before each (if any)."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, start = match["fence"], i
        end = next(
            (
                j
                for j in range(i + 1, len(lines))
                if lines[j].startswith(fence[0] * len(fence)) and not lines[j].strip(fence[0])
            ),
            None,
        )
        if end is None:
            raise AssertionError(f"{path}:{i + 1}: a code block is never closed")
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP_MARKER.match(previous)
        blocks.append(
            Block(
                path,
                start + 1,
                match["info"].strip().split(" ")[0],
                "\n".join(lines[start + 1 : end]) + "\n",
                marker["reason"] if marker else None,
            )
        )
        i = end + 1
    return blocks


def substitute_models(text: str, tiny_models: dict[str, str]) -> str:
    for hub_id, style in HUB_MODELS.items():
        text = text.replace(hub_id, tiny_models[style])
    return text


# ---------------------------------------------------------------------------------------------------------------------
# Commands


class ParsedOnly(Exception):
    """Raised right after a command's arguments parsed: the command is right as far as its parser can tell."""


def split_commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, `&&` / `;` split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in (";", "&&", "||"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [command for command in commands if command]


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.MULTILINE))


def pyproject_extras() -> set[str]:
    # The keys of pyproject's [project.optional-dependencies] table (tomllib is Python 3.11+; the package runs on 3.10)
    text = (REPO_ROOT / "pyproject.toml").read_text()
    table = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", table, flags=re.MULTILINE))


def _needs_cpu_flag(parser) -> bool:
    """A parser with TrainingArguments on a machine without CUDA: the recipe's `bf16: true` would stop it."""
    from transformers import TrainingArguments

    types = getattr(parser, "dataclass_types", ())
    return not torch.cuda.is_available() and any(issubclass(t, TrainingArguments) for t in types)


@contextlib.contextmanager
def stop_after_parsing():
    """Every `trl_presafety` script and every argparse parser raises `ParsedOnly` once its arguments parsed."""
    import trl_presafety.scripts.arguments as script_utils

    strict = script_utils.parse_args_strict

    def parse_then_stop(parser, argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        if _needs_cpu_flag(parser) and "--use_cpu" not in argv:
            argv += ["--use_cpu", "true"]
        raise ParsedOnly(strict(parser, argv))

    parse_args = argparse.ArgumentParser.parse_args

    def argparse_then_stop(self, args=None, namespace=None):
        raise ParsedOnly(parse_args(self, args, namespace))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(script_utils, "parse_args_strict", parse_then_stop)
        for name, module in list(sys.modules.items()):
            if name.startswith("trl_presafety.scripts.") and hasattr(module, "parse_args_strict"):
                patch.setattr(module, "parse_args_strict", parse_then_stop)
        patch.setattr(argparse.ArgumentParser, "parse_args", argparse_then_stop)
        yield


def _expect_parsed(run) -> None:
    try:
        run()
    except ParsedOnly:
        return
    raise AssertionError("the command returned without parsing its arguments")


def _run_module_as_main(module: str, args: list[str], monkeypatch) -> None:
    """`python -m module args`, in this process."""
    monkeypatch.setattr(sys, "argv", [module, *args])
    with warnings.catch_warnings():
        # runpy warns that the module was imported before (by an earlier command): it runs afresh as __main__
        warnings.filterwarnings(
            "ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning
        )
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def check_training_args(module_name: str, args: list[str]) -> list[str]:
    """`args` plus `--use_cpu true` where the command trains and this machine has no GPU."""
    module = importlib.import_module(module_name)
    make_parser = getattr(module, "make_parser", None)
    if make_parser is not None and _needs_cpu_flag(make_parser()) and "--use_cpu" not in args:
        return [*args, "--use_cpu", "true"]
    return args


def check_accelerate_launch(args: list[str], monkeypatch) -> None:
    """`accelerate launch [options] -m MODULE ARGS`: the options parse with accelerate's parser, the config file
    exists, and the script's arguments parse as the script parses them."""
    from accelerate.commands.launch import launch_command_parser

    assert args and args[0] == "launch", f"only `accelerate launch` is known, not {args[:1]}"
    flag = next(i for i, token in enumerate(args) if token in ("-m", "--module"))
    launch_args, module, script_args = args[1:flag], args[flag + 1], args[flag + 2 :]
    parsed = launch_command_parser().parse_args([*launch_args, "--module", module, *script_args])
    if parsed.config_file is not None:
        assert Path(parsed.config_file).is_file(), f"no accelerate config {parsed.config_file}"
    check_python_module(module, script_args, monkeypatch)


def check_python_module(module: str, args: list[str], monkeypatch) -> None:
    if module == "trl_presafety.tiny":  # cheap (seconds): run it, later blocks use the model it writes
        _run_module_as_main(module, args, monkeypatch)
        return
    assert module.startswith(("trl_presafety.scripts.", "benchmarks.")), f"no rule for `python -m {module}`"
    if module.startswith("trl_presafety.scripts."):
        args = check_training_args(module, args)
    with stop_after_parsing():
        _expect_parsed(lambda: _run_module_as_main(module, args, monkeypatch))


def check_trl_presafety(args: list[str], monkeypatch, capsys) -> None:
    from trl_presafety import cli

    if args and args[0] in ("--help", "-h", "--version", "-V"):
        cli.main(args)
        assert capsys.readouterr().out.strip(), f"`trl-presafety {args[0]}` printed nothing"
        return
    assert args and args[0] in cli.COMMANDS, f"`trl-presafety {args[:1]}` is not a command"
    command, rest = args[0], check_training_args(cli.COMMANDS[args[0]], args[1:])
    launched = []

    def launch_checked(module_name, config, launch_args, script_args, launch_command_fn=None):
        # accelerate's own parser reads the launch; the script's arguments are parsed below, strictly
        launched.append(script_args)
        return cli_launch(module_name, config, launch_args, script_args, launch_command_fn=lambda _: None)

    cli_launch = cli.launch
    monkeypatch.setattr(cli, "launch", launch_checked)
    with stop_after_parsing():
        try:
            cli.main([command, *rest])
        except ParsedOnly:
            return
        assert launched, f"`trl-presafety {command}` returned without parsing its arguments"
        module = importlib.import_module(cli.COMMANDS[command])
        _expect_parsed(lambda: module.main(launched[0]))


def check_pip(args: list[str]) -> None:
    from packaging.requirements import Requirement

    assert args[:1] == ["install"], f"only `pip install` is known, not `pip {args[:1]}`"
    for item in (a for a in args[1:] if not a.startswith("-")):
        requirement = Requirement(item.replace(".[", "trl-presafety[", 1) if item.startswith(".[") else item)
        assert requirement.name == "trl-presafety", f"`pip install {item}`: only this package's extras are checked"
        assert requirement.extras <= pyproject_extras(), f"unknown extras {requirement.extras - pyproject_extras()}"


def check_command(argv: list[str], monkeypatch, capsys) -> None:
    """One command of a shell block, checked the cheapest way that proves it right."""
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):  # `DS_ACCELERATOR=cpu accelerate launch ...`
        argv = argv[1:]
    program, args = argv[0], argv[1:]
    if program == "make":
        assert args and set(args) <= makefile_targets(), f"not Makefile targets: {set(args) - makefile_targets()}"
    elif program == "source":
        venv = re.search(r"^VENV := (\S+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE)[1]
        assert args == [f"{venv}/bin/activate"], f"`make setup` creates {venv}/bin/activate, not {args}"
    elif program == "pip":
        check_pip(args)
    elif program == "trl-presafety":
        check_trl_presafety(args, monkeypatch, capsys)
    elif program == "accelerate":
        check_accelerate_launch(args, monkeypatch)
    elif program in ("python", "python3") and args[:1] == ["-m"]:
        check_python_module(args[1], args[2:], monkeypatch)
    else:
        raise AssertionError(f"no rule checks `{program}`: add one to tests/test_docs.py, or mark the block")


# ---------------------------------------------------------------------------------------------------------------------
# Running a page


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in LINKED:
        (root / name).symlink_to(REPO_ROOT / name)
    return root


def run_python_blocks(blocks: list[Block], root: Path, tiny_models: dict[str, str]) -> None:
    files = []
    for block in blocks:
        name = f"{block.path.stem}_L{block.line}.py"
        (root / name).write_text(substitute_models(block.code, tiny_models))
        files.append(name)
    (root / "_docs_harness.py").write_text(HARNESS)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root),
    }
    result = subprocess.run(
        [sys.executable, "_docs_harness.py", *files], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        failed = re.findall(r"=== FAILED (\S+)", result.stdout)
        where = next((b.where for b, f in zip(blocks, files) if f in failed), "?")
        raise AssertionError(f"The python block at {where} fails:\n{result.stderr[-4000:]}\n{result.stdout[-2000:]}")


def check_page(path: Path, root: Path, tiny_models: dict[str, str], monkeypatch, capsys) -> list[str]:
    """Checks every block of `path` in order; returns the blocks run or parsed, for the caller's assertions."""
    checked, pending = [], []
    monkeypatch.chdir(root)
    for block in extract_blocks(path) + [None]:
        if block is None or block.language not in RUN_LANGUAGES or block.skip_reason:
            if pending:
                run_python_blocks(pending, root, tiny_models)
                pending = []
        if block is None or block.skip_reason:
            continue
        if block.language in RUN_LANGUAGES:
            pending.append(block)
        elif block.language in COMMAND_LANGUAGES:
            for argv in split_commands(substitute_models(block.code, tiny_models)):
                try:
                    check_command(argv, monkeypatch, capsys)
                except (AssertionError, Exception, SystemExit) as error:
                    raise AssertionError(f"{block.where}: `{shlex.join(argv)}` fails: {error!r}") from error
        elif block.language == "yaml":
            yaml.safe_load(block.code)
        elif block.language == "json":
            json.loads(block.code)
        checked.append(f"{block.where} [{block.language}]")
    return checked


@pytest.fixture
def page_root(tmp_path):
    return make_root(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# The tests


def test_every_block_says_what_it_is():
    """A block without a language, or one the test does not know, would be neither run nor knowingly skipped."""
    problems = []
    for path in DOC_FILES:
        for block in extract_blocks(path):
            if block.language not in RUN_LANGUAGES | COMMAND_LANGUAGES | READ_LANGUAGES:
                problems.append(f"{block.where}: language {block.language!r}")
    assert not problems, "Give each block a language (`text` for output): " + "; ".join(problems)


RUNNABLE_PAGES = [
    path
    for path in DOC_FILES
    if any(b.language in RUN_LANGUAGES | COMMAND_LANGUAGES and not b.skip_reason for b in extract_blocks(path))
]


@pytest.mark.parametrize("path", RUNNABLE_PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in RUNNABLE_PAGES])
def test_page_snippets_run(path, page_root, tiny_model_dirs, monkeypatch, capsys):
    checked = check_page(path, page_root, tiny_model_dirs, monkeypatch, capsys)
    assert checked


# The harness itself: it must fail on a broken snippet, or passing means nothing


def _page(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(body))
    return path


def test_extraction_reads_languages_markers_and_lines(tmp_path):
    path = _page(
        tmp_path,
        """\
        # Page

        ```python
        print(1)
        ```

        <!-- not tested: needs a GPU and the Hub -->
        ```bash
        trl-presafety sft --config recipes/Qwen3-8B/sft/config_presafety.yaml
        ```

        ````text
        ```
        nested
        ```
        ````
        """,
    )
    blocks = extract_blocks(path)
    assert [(b.line, b.language, b.skip_reason) for b in blocks] == [
        (3, "python", None),
        (8, "bash", "needs a GPU and the Hub"),
        (12, "text", None),
    ]
    assert blocks[2].code == "```\nnested\n```\n"


def test_commands_split_like_a_shell():
    code = "DS_ACCELERATOR=cpu accelerate launch --num_processes 2 \\\n    -m mod --a 1  # comment\nmake a && make b; make c\n"
    assert split_commands(code) == [
        ["DS_ACCELERATOR=cpu", "accelerate", "launch", "--num_processes", "2", "-m", "mod", "--a", "1"],
        ["make", "a"],
        ["make", "b"],
        ["make", "c"],
    ]


@pytest.mark.parametrize(
    "command",
    [
        "trl-presafety sft --config recipes/tiny/sft/config_presafety.yaml --presafety_loss_wieght 1",
        "trl-presafety sft --config recipes/tiny/sft/config_missing.yaml",
        "trl-presafety dpo --accelerate_config zero4 --config recipes/tiny/dpo/config_presafety.yaml",
        "trl-presafety evaluate --config recipes/tiny/eval.yaml",
        "python -m trl_presafety.scripts.evaluate --config recipes/tiny/eval.yaml --judge regexp",
        "accelerate launch --config_file accelerate_configs/zero9.yaml -m trl_presafety.scripts.sft --config x.yaml",
        "python -m benchmarks.overhead --sizes huge",
        "make no_such_target",
        'pip install "trl-presafety[gpu]"',
        "trackio show",
    ],
)
def test_a_wrong_command_fails(command, page_root, monkeypatch, capsys):
    monkeypatch.chdir(page_root)
    with pytest.raises((AssertionError, Exception, SystemExit)):
        check_command(shlex.split(command), monkeypatch, capsys)


def test_the_right_commands_pass(page_root, monkeypatch, capsys):
    """The counterpart of the failures above: the same commands, right, pass (and none launches anything)."""
    monkeypatch.chdir(page_root)
    for command in [
        "trl-presafety sft --config recipes/tiny/sft/config_presafety.yaml --presafety_loss_weight 1",
        "trl-presafety dpo --accelerate_config zero3 --config recipes/tiny/dpo/config_presafety.yaml",
        "python -m trl_presafety.scripts.evaluate --config recipes/tiny/eval.yaml --judge cues",
        "accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml -m trl_presafety.scripts.sft "
        "--config recipes/tiny/sft/config_presafety.yaml",
        "python -m benchmarks.overhead --sizes tiny",
        "make docs",
        'pip install "trl-presafety[docs,eval]"',
    ]:
        check_command(shlex.split(command), monkeypatch, capsys)
    assert not (page_root / "runs").exists(), "a parsed command must not run"


def test_a_broken_python_snippet_fails(tmp_path, tiny_model_dirs, monkeypatch, capsys):
    root = make_root(tmp_path)
    page = _page(
        tmp_path,
        """\
        ```python
        from pathlib import Path

        Path("out.txt").write_text("saved")
        ```

        ```python
        from pathlib import Path

        assert Path("out.txt").read_text() == "saved"  # the earlier block's file is there
        print(undefined_name)
        ```
        """,
    )
    with pytest.raises(AssertionError, match=r"page.md:7 fails:(.|\n)*NameError: name 'undefined_name'"):
        check_page(page, root, tiny_model_dirs, monkeypatch, capsys)


def test_a_marked_block_is_skipped(tmp_path, tiny_model_dirs, monkeypatch, capsys):
    page = _page(
        tmp_path,
        """\
        <!-- not tested: shows an error on purpose -->
        ```python
        raise SystemExit(1)
        ```
        """,
    )
    assert check_page(page, make_root(tmp_path), tiny_model_dirs, monkeypatch, capsys) == []


# Reference tables that must follow the code


def test_configuration_page_lists_every_field_with_its_default():
    from trl_presafety import PreSafetyArguments

    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(presafety_\w+)` \| (`[^`]*`) \|", text, flags=re.MULTILINE))
    expected = {f.name: f"`{f.default!r}`".replace("'", '"') for f in fields(PreSafetyArguments)}
    assert rows == expected


def test_recipes_page_lists_every_recipe():
    text = (REPO_ROOT / "docs" / "recipes.md").read_text()
    # The table names each recipe by its path inside `recipes/<model>/`
    missing = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "recipes").rglob("*.yaml")
        if f"`{Path(*path.relative_to(REPO_ROOT / 'recipes').parts[1:])}`" not in text
    ]
    assert not missing, f"recipes not on docs/recipes.md: {missing}"


# The docs build's reading of TRL-style docstrings (docs/_ext/hf_docstrings.py)


def _hf_docstrings():
    spec = importlib.util.spec_from_file_location("hf_docstrings", REPO_ROOT / "docs" / "_ext" / "hf_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trl_field_groups_become_google_sections():
    pytest.importorskip("griffe")
    docstring = textwrap.dedent(
        """\
        A config.

        > Parameters that control the head

        weight (`float`, *optional*, defaults to `1.0`):
            The weight.
        kind (`str` or `None`, *optional*): The kind,
            on two lines.

        > Parameters that control nothing

        See the other class.
        """
    )
    assert _hf_docstrings().convert_groups(docstring) == textwrap.dedent(
        """\
        A config.

        **Parameters that control the head**

        Args:
            weight (float):
                The weight.
            kind (str | None): The kind,
                on two lines.

        **Parameters that control nothing**

        See the other class."""
    )


def test_cross_references_link_documented_objects_only():
    griffe = pytest.importorskip("griffe")
    hf = _hf_docstrings()
    package = griffe.load(
        "trl_presafety", search_paths=[str(REPO_ROOT)], extensions=griffe.load_extensions(hf.HFDocstrings)
    )
    config = package["trainer.presafety_sft_config.PreSafetySFTConfig"].docstring.value
    assert '<autoref identifier="trl_presafety.trainer.presafety_sft_trainer.PreSafetySFTTrainer" optional>' in config
    assert "TRL's `SFTConfig`" in config  # `[`~trl.SFTConfig`]`: outside the package, plain code
    assert "[`" not in config


@pytest.mark.parametrize("package", ["trl_presafety", "trl_presafety.labeling"])
def test_lazy_packages_show_their_names_to_static_readers(package):
    """The lazy packages import their public names on first use (`_lazy.py`); the same names, from the same
    submodules, are imported under `if TYPE_CHECKING:`, which is what IDEs and the API reference (griffe) read."""
    import ast

    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text())
    exports = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS"
    )
    checked = next(
        node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    imported = {
        (statement.module, alias.name)
        for statement in checked.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }
    assert imported == {(submodule, name) for submodule, names in exports.items() for name in names}
    assert {name for _, name in imported} == set(module.__all__)
