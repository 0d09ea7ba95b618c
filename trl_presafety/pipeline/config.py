# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""One connected path per model: the stages of the method (build-sft, label, SFT, eval, eval-compare, and the DPO
path), run in order from one YAML file, each skipped when its output is complete.

```yaml
# Hardware: ...
run_dir: runs/tiny-pipeline    # pipeline_state.json: what finished, with which command line, and how long it took
paths: [sft]                   # the paths run by default; `--paths sft dpo` adds the DPO path
stages:
  - name: build-sft            # unique
    command: build-sft         # a `trl-presafety` command (or `module: pkg.mod` for `python -m pkg.mod`)
    config: recipes/tiny/build_sft.yaml
    args: {output_dir: "${run_dir}/sft-data"}   # command-line overrides of the recipe
  - name: sft
    command: sft
    config: recipes/tiny/sft/config_presafety.yaml
    accelerate_config: zero3   # training stages: launched with `accelerate launch` (and `launch:` options)
    args: {dataset_name: "${run_dir}/labels"}
  - name: dpo
    paths: [dpo]               # only on the DPO path
    ...
```

A generation stage (`label`, `build-sft`) may run as several workers sharing its output folder
(`trl_presafety.shards`): `workers: {count: 4}` starts them here, one per group of `gpus_per_worker` GPUs;
`workers: {count: 16, launch: external}` prints the command each worker runs (on any node that sees the folder, e.g.
a Slurm array) and waits until the folder is complete, checking every `poll_seconds`. Either way the next stage
starts only once every shard is written and the folder is recorded complete.

`${run_dir}` in a stage's `args`, `outputs`, `config` or `launch` stands for `run_dir`, so that one run moves
whole: `run_pipeline(..., run_dir=...)` (`--run_dir`) replaces the file's `run_dir` (the tests run the shipped
files into a temporary folder this way). Other paths are relative to the directory the pipeline runs from.

Each stage runs as a subprocess (`python -m trl_presafety.cli <command> ...`), so GPU memory and vLLM engines are
released between stages. Before anything runs, every stage's arguments are parsed with its command's strict parser,
so a typo in the last stage fails at once. Before a stage starts, its inputs are checked: a label folder must be
complete (`check_label_folder`), a dataset must have the columns the command reads, a model or report must exist;
the error names the stage that should have produced the input. A stage is skipped when `pipeline_state.json`
records it finished with the same arguments, its output is complete, and no stage it reads from ran again since;
after a crash or a preemption, rerun the same command: finished stages are skipped, and `label` / `build-sft`
resume from their last finished shard.
"""

import difflib
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipe_files import RecipeError, load_yaml_strict


RUN_DIR_VARIABLE = "${run_dir}"
TOP_LEVEL_KEYS = ("run_dir", "paths", "stages")
STAGE_KEYS = (
    "name",
    "command",
    "module",
    "config",
    "args",
    "paths",
    "accelerate_config",
    "launch",
    "outputs",
    "workers",
)
# A generation stage run as shard workers (`trl_presafety.shards`)
WORKER_COMMANDS = ("label", "build-sft")
WORKER_KEYS = ("count", "launch", "gpus_per_worker", "poll_seconds")
WORKER_LAUNCHES = ("local", "external")
PATHS = ("sft", "dpo", "self_routing")
TRAINING = ("sft", "dpo", "grpo")


class PipelineError(ValueError):
    """A pipeline file that cannot run, or a stage whose input is missing or incomplete."""


def _close(key: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _args_list(args: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """A stage's `args` (a mapping of overrides, or a list of strings) as command-line strings."""
    if args is None:
        return []
    if not isinstance(args, Mapping):
        return [str(a) for a in args]
    argv = []
    for key, value in args.items():
        argv.append(f"--{key}")
        values = value if isinstance(value, list) else [value]
        argv.extend(
            "true" if v is True else "false" if v is False else "null" if v is None else str(v) for v in values
        )
    return argv


@dataclass(frozen=True)
class Workers:
    """How a generation stage runs as shard workers: `count` of them, started here (`local`, each on its own
    `gpus_per_worker` GPUs, or sharing them with 0) or by you on any node (`external`), the pipeline checking every
    `poll_seconds` whether the folder is complete."""

    count: int
    launch: str = "local"
    gpus_per_worker: int = 0
    poll_seconds: float = 30.0


def _workers(raw: Any, where: str) -> Workers:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"count": raw}
    if not isinstance(raw, Mapping):
        raise PipelineError(f"{where}: `workers` is a mapping such as `{{count: 4, launch: local}}`, got {raw!r}.")
    for key in raw:
        if key not in WORKER_KEYS:
            raise PipelineError(
                f"{where}: unknown key `workers.{key}`{_close(key, WORKER_KEYS)}. Use {list(WORKER_KEYS)}."
            )
    count, launch = raw.get("count"), raw.get("launch", "local")
    gpus, poll = raw.get("gpus_per_worker", 0), raw.get("poll_seconds", 30.0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise PipelineError(f"{where}: invalid `workers.count`: {count!r}. Use the number of workers, >= 1.")
    if launch not in WORKER_LAUNCHES:
        raise PipelineError(
            f"{where}: invalid `workers.launch`: {launch!r}. Use `local` (the pipeline starts them here) or "
            "`external` (you start them, e.g. a Slurm array; the pipeline waits for the folder)."
        )
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise PipelineError(
            f"{where}: invalid `workers.gpus_per_worker`: {gpus!r}. Use the GPUs each local worker gets (its "
            "vllm_tensor_parallel_size x vllm_data_parallel_size), or 0 to let them share the visible ones."
        )
    if gpus and launch != "local":
        raise PipelineError(f"{where}: `workers.gpus_per_worker` applies to `launch: local` only; remove it.")
    if not isinstance(poll, (int, float)) or isinstance(poll, bool) or poll <= 0:
        raise PipelineError(f"{where}: invalid `workers.poll_seconds`: {poll!r}. Use a number of seconds > 0.")
    return Workers(count=count, launch=launch, gpus_per_worker=gpus, poll_seconds=float(poll))


@dataclass
class Stage:
    """One stage of a pipeline file."""

    name: str
    command: str | None = None
    module: str | None = None
    config: str | None = None
    args: Mapping[str, Any] | list[str] = field(default_factory=dict)
    paths: tuple[str, ...] = PATHS
    accelerate_config: str | None = None
    launch: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    workers: Workers | None = None
    # Set by the run for a worker stage whose output must be recomputed from scratch (its input changed)
    start_over: bool = False

    @property
    def label(self) -> str:
        return f"`{self.name}`"

    def worker_argv(self, index: int | str) -> list[str]:
        """The options that make one process worker `index` of this stage's workers."""
        assert self.workers is not None
        return ["--num_workers", str(self.workers.count), "--worker_index", str(index)]

    def worker_shell(self, index: int | str) -> str:
        return " ".join([self.shell(), *self.worker_argv(index)])

    def argv(self) -> list[str]:
        """The stage's own arguments: the recipe, then the overrides."""
        return (["--config", self.config] if self.config else []) + _args_list(self.args)

    def command_line(self) -> list[str]:
        """What runs: `python -m trl_presafety.cli <command> [--accelerate_config ...] <argv>` or `python -m <module>`."""
        if self.module is not None:
            return [sys.executable, "-m", self.module, *self.argv()]
        launch = ["--accelerate_config", self.accelerate_config] if self.accelerate_config else []
        launch += _args_list(self.launch)
        return [sys.executable, "-m", "trl_presafety.cli", self.command, *launch, *self.argv()]

    def shell(self) -> str:
        """The command line as a user types it."""
        if self.module is not None:
            return " ".join(["python", "-m", self.module, *self.argv()])
        return " ".join(["trl-presafety", *self.command_line()[3:]])

    def values(self) -> dict[str, Any]:
        """The recipe's values with the overrides on top (what the command will see for the keys read here)."""

        values: dict[str, Any] = {}
        if self.config:
            loaded = load_yaml_strict(self.config) or {}
            values.update(loaded if isinstance(loaded, dict) else {})
        if isinstance(self.args, Mapping):
            values.update(self.args)
        else:  # a list of strings: `--key value [value ...]`
            key = None
            for item in self.args:
                if item.startswith("--"):
                    key = item[2:]
                    values[key] = True
                elif key is not None:
                    values[key] = item if values[key] is True else [*_as_list(values[key]), item]
        return values

    def fingerprint(self) -> str:
        """What the stage's result depends on: its command and the values of its recipe and overrides (a comment
        edited in the recipe changes nothing)."""
        content = {"command": self.command, "module": self.module, "values": self.values(), "outputs": self.outputs}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _substitute(value: Any, run_dir: str) -> Any:
    """`${run_dir}` replaced in a value of a stage (strings, and the strings of lists and mappings)."""
    if isinstance(value, str):
        return value.replace(RUN_DIR_VARIABLE, run_dir)
    if isinstance(value, list):
        return [_substitute(item, run_dir) for item in value]
    if isinstance(value, Mapping):
        return {key: _substitute(item, run_dir) for key, item in value.items()}
    return value


def load_pipeline(path: str | Path, run_dir: str | None = None) -> tuple[str, tuple[str, ...], list[Stage]]:
    """Reads and checks a pipeline file: `(run_dir, default paths, stages)`. `run_dir` replaces the file's own (and
    so every `${run_dir}` of its stages)."""

    from ..cli import COMMANDS

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"Pipeline file {path} does not exist. Pass `--config recipes/<model>/pipeline.yaml`.")
    try:
        data = load_yaml_strict(path)
    except RecipeError as error:
        raise PipelineError(str(error)) from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path} must be a YAML mapping with the keys {list(TOP_LEVEL_KEYS)}.")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise PipelineError(
                f"Unknown key(s) in pipeline file {path}: `{key}`{_close(key, TOP_LEVEL_KEYS)}. Use "
                f"{list(TOP_LEVEL_KEYS)}."
            )
    if not data.get("run_dir"):
        raise PipelineError(f"{path}: `run_dir` is required (where pipeline_state.json is written), got None.")
    run_dir = str(run_dir or data["run_dir"])
    default_paths = tuple(_as_list(data.get("paths") or ["sft"]))
    for name in default_paths:
        if name not in PATHS:
            raise PipelineError(f"{path}: unknown path {name!r} in `paths`{_close(name, PATHS)}. Use {list(PATHS)}.")
    stages, names = [], set()
    for index, raw in enumerate(data.get("stages") or []):
        where = f"{path}, stage {index + 1}"
        if not isinstance(raw, dict):
            raise PipelineError(f"{where}: a stage is a mapping with `name` and `command` (or `module`), got {raw!r}.")
        raw = _substitute(raw, run_dir)
        for key in raw:
            if key not in STAGE_KEYS:
                raise PipelineError(f"{where}: unknown key `{key}`{_close(key, STAGE_KEYS)}. Use {list(STAGE_KEYS)}.")
        name = raw.get("name")
        if not name or name in names:
            raise PipelineError(f"{where}: every stage needs a unique `name`, got {name!r}.")
        names.add(name)
        if (raw.get("command") is None) == (raw.get("module") is None):
            raise PipelineError(
                f"{where} (`{name}`): set exactly one of `command` (a trl-presafety command) or `module`."
            )
        command = raw.get("command")
        if command is not None and command not in COMMANDS:
            raise PipelineError(
                f"{where} (`{name}`): unknown command {command!r}{_close(command, list(COMMANDS))}. Use one of "
                f"{sorted(COMMANDS)}."
            )
        if raw.get("accelerate_config") and command not in TRAINING:
            raise PipelineError(
                f"{where} (`{name}`): `accelerate_config` launches a training command ({', '.join(TRAINING)}), not "
                f"{command or raw.get('module')!r}. Remove it."
            )
        if raw.get("config") and not Path(raw["config"]).is_file():
            raise PipelineError(f"{where} (`{name}`): recipe {raw['config']} does not exist (paths are relative to "
                                "the directory the pipeline runs from, the repository root for the shipped files).")  # fmt: skip
        stage_paths = tuple(_as_list(raw.get("paths") or list(PATHS)))
        for item in stage_paths:
            if item not in PATHS:
                raise PipelineError(
                    f"{where} (`{name}`): unknown path {item!r}{_close(item, PATHS)}. Use {list(PATHS)}."
                )
        workers = None
        if raw.get("workers") is not None:
            if command not in WORKER_COMMANDS:
                raise PipelineError(
                    f"{where} (`{name}`): `workers` runs a sharded generation command ({', '.join(WORKER_COMMANDS)}) "
                    f"as several processes, not {command or raw.get('module')!r}. Remove it."
                )
            workers = _workers(raw["workers"], f"{where} (`{name}`)")
            taken = [key for key in ("num_workers", "worker_index") if key in (raw.get("args") or {})]
            if taken:
                raise PipelineError(
                    f"{where} (`{name}`): `args` sets {taken}, which `workers` sets for each worker. Remove them."
                )
        if raw.get("module") and not raw.get("outputs"):
            raise PipelineError(
                f"{where} (`{name}`): a `module` stage needs `outputs` (the files whose presence means it finished)."
            )
        stages.append(
            Stage(
                name=name,
                command=command,
                module=raw.get("module"),
                config=raw.get("config"),
                args=raw.get("args") or {},
                paths=stage_paths,
                accelerate_config=raw.get("accelerate_config"),
                launch=raw.get("launch") or {},
                outputs=tuple(_as_list(raw.get("outputs") or [])),
                workers=workers,
            )
        )
    if not stages:
        raise PipelineError(f"{path}: `stages` is empty. List the stages to run, in order.")
    return run_dir, default_paths, stages


# --- what each command reads and writes ------------------------------------------------------------------------------


# --- running ---------------------------------------------------------------------------------------------------------
