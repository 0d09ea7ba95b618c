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

import dataclasses
import difflib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .labeling.state import SHARDS_DIR, STATE_FILE, IncompleteLabelsError, check_label_folder, label_folder_status
from .recipe_files import RecipeError, load_yaml_strict


PIPELINE_STATE = "pipeline_state.json"
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

    from .cli import COMMANDS

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


@dataclass
class Input:
    """A path a stage reads, and the columns it needs there (`None`: not a dataset)."""

    path: str
    key: str
    columns: tuple[str, ...] | None = None
    one_of: tuple[tuple[str, ...], ...] = ()


def stage_outputs(stage: Stage) -> list[str]:
    """The folders or files a stage writes (what later stages may read)."""
    if stage.module is not None:
        return list(stage.outputs)
    values = stage.values()
    outputs = [values.get("output_dir") or {"eval": "eval_results", "eval-compare": "eval_compare"}.get(stage.command)]
    if stage.command == "build-sft" and values.get("pairs_output_dir"):
        outputs.append(values["pairs_output_dir"])
    return [str(o) for o in outputs if o]


def stage_inputs(stage: Stage) -> list[Input]:
    """The paths a stage reads, with the columns its command needs there."""
    if stage.module is not None:
        return []
    values = stage.values()
    inputs = []
    model = values.get("model_name_or_path")
    if model and stage.command != "train-classifier":
        inputs.append(Input(str(model), "model_name_or_path"))
    if stage.command == "label":
        inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (values.get("prompt_column", "prompt"),)))
        if values.get("classifier_name_or_path"):
            inputs.append(Input(str(values["classifier_name_or_path"]), "classifier_name_or_path"))
    elif stage.command in ("sft", "dpo"):
        label = values.get("presafety_label_column", "safety_label")
        if stage.command == "sft":
            inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (label,), (("messages",), ("text",),
                                                                                            ("prompt", "completion"))))  # fmt: skip
        else:
            inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (label, "chosen", "rejected")))
    elif stage.command == "build-sft":
        if values.get("classifier_path"):
            inputs.append(Input(str(values["classifier_path"]), "classifier_path"))
        for spec in _as_list(values.get("prompts") or []):
            body = str(spec).split("@")[0]
            if "=" in body:
                inputs.append(Input(body.split("=", 1)[1], "prompts"))
    elif stage.command == "eval":
        for key in ("adapter_path", "route_gate"):  # the head that routes (`--route`), e.g. a `fit-gate` output
            if values.get(key) and str(values[key]).lower() != "none":
                inputs.append(Input(str(values[key]), key))
    elif stage.command in ("fit-gate", "calibrate-gate", "export-gate"):
        # A gate's labeled prompts (a label folder) and, for the last two, the head folder it reads
        columns = (values.get("prompt_column", "prompt"), values.get("label_column", "safety_label"))
        for key in ("dataset_name", "calibration_dataset"):
            if stage.command != "export-gate" and values.get(key):
                inputs.append(Input(str(values[key]), key, columns))
        if values.get("head_path"):
            inputs.append(Input(str(values["head_path"]), "head_path"))
    elif stage.command == "eval-compare":
        inputs.extend(Input(str(report), "reports") for report in _as_list(values.get("reports") or []))
    elif stage.command == "train-classifier" and values.get("dataset_name"):
        inputs.append(Input(str(values["dataset_name"]), "dataset_name"))
    return [item for item in inputs if item.path not in ("None", "")]


def _norm(path: str) -> str:
    return os.path.normpath(path)


def producer_of(path: str, stages: Sequence[Stage], before: int) -> Stage | None:
    """The last stage before index `before` that writes `path` (or a folder holding it)."""
    target = Path(_norm(path))
    for stage in reversed(stages[:before]):
        for output in stage_outputs(stage):
            out = Path(_norm(output))
            # the folder itself, a file in it, or (an output declared as a file) the folder holding it
            if target == out or out in target.parents or target in out.parents:
                return stage
    return None


def dataset_columns(path: str | Path) -> list[str] | None:
    """The columns of a local dataset: a folder of parquet shards (label / build-sft output), a folder or file of
    JSON lines / parquet; `None` when they cannot be read without loading it."""
    path = Path(path)
    files = []
    if path.is_dir():
        shards = sorted((path / SHARDS_DIR).glob("*.parquet")) or sorted(path.glob("*.parquet"))
        files = shards or sorted(path.glob("*.jsonl")) or sorted(path.glob("*.json"))
    elif path.is_file():
        files = [path]
    for file in files:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(file).names)
        if file.suffix in (".jsonl", ".json"):
            with open(file, encoding="utf-8") as handle:
                first = handle.readline().strip()
            if first.startswith("{"):
                return list(json.loads(first))
    return None


def check_input(stage: Stage, item: Input, stages: Sequence[Stage], index: int) -> None:
    """Raises [`PipelineError`] naming the stage that should have produced `item` when it is missing, incomplete or
    lacks a column. Paths no earlier stage writes and that do not exist locally are taken as hub ids."""
    producer = producer_of(item.path, stages, index)
    local = Path(item.path).exists()
    if producer is None and not local:
        return  # a hub id (the command itself reports a missing one)
    origin = (
        f"It should have been produced by stage `{producer.name}` ({producer.shell()}); rerun the pipeline to run "
        f"it, or `--force {producer.name}` to run it again."
        if producer is not None
        else "No stage of this pipeline writes it: check the path."
    )
    problem = None
    if not local:
        problem = "does not exist"
    else:
        try:
            check_label_folder(item.path)
        except IncompleteLabelsError as error:
            problem = f"is not complete ({error})"
        if problem is None and (item.columns or item.one_of):
            columns = dataset_columns(item.path)
            if columns is not None:
                missing = [c for c in item.columns or () if c not in columns]
                if item.one_of and not any(all(c in columns for c in group) for group in item.one_of):
                    missing.append(" or ".join("+".join(group) for group in item.one_of))
                if missing:
                    problem = f"has no column(s) {missing} (its columns: {sorted(columns)})"
    if problem is not None:
        raise PipelineError(
            f"Stage {stage.label} ({stage.command}) cannot start: its input {item.path} (`{item.key}`) {problem}. "
            f"{origin}"
        )


def output_complete(stage: Stage) -> bool:
    """Whether the stage's outputs are on disk and complete (the pipeline state says whether they match its args)."""
    outputs = stage_outputs(stage)
    if not outputs:
        return False
    for output in outputs:
        path = Path(output)
        if stage.module is not None:
            if not path.exists():
                return False
        elif stage.command in ("build-sft", "label", "build-self-routing"):
            if not (path / STATE_FILE).is_file() or not label_folder_status(path)["complete"]:
                return False
        elif stage.command in TRAINING:
            # `train_results.json` is written once training ends; the weights (full model or adapter) once saved
            weights = (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
            if not (path / "train_results.json").is_file() or not weights:
                return False
        elif stage.command == "eval":
            if not (path / "report.json").is_file():
                return False
        elif stage.command == "eval-compare":
            if not (path / "compare.md").is_file():
                return False
        elif stage.command == "train-classifier":
            if not (path / "classifier_results.json").is_file():
                return False
        elif stage.command == "fit-gate":
            from .modeling import SAFETY_HEAD_CONFIG_NAME

            # The head's config is written after its weights, the tokenizer last
            if not (path / SAFETY_HEAD_CONFIG_NAME).is_file() or not (path / "tokenizer_config.json").is_file():
                return False
        elif stage.command == "export-gate":
            # The model card is written after the weights and the tokenizer
            if not (path / "README.md").is_file() or not (path / "config.json").is_file():
                return False
        elif not path.exists():
            return False
    return True


# --- running ---------------------------------------------------------------------------------------------------------


def _read_state(run_dir: Path) -> dict[str, Any]:
    """The recorded state; a damaged file (truncated, not the expected shape) gives an empty state whose `damaged`
    says why, so that the plan reruns every stage and says so, rather than crash or rerun in silence."""
    path = run_dir / PIPELINE_STATE
    if not path.is_file():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {"stages": {}, "damaged": f"{path} cannot be read ({type(error).__name__}: {error})"}
    if not isinstance(state, dict) or not isinstance(state.get("stages", {}), dict):
        found = type(state.get("stages") if isinstance(state, dict) else state).__name__
        return {
            "stages": {},
            "damaged": f"{path} is not a pipeline state (expected {{'stages': {{...}}}}, found a {found})",
        }
    bad = [name for name, record in state.get("stages", {}).items() if not isinstance(record, dict)]
    if bad:
        return {"stages": {}, "damaged": f"{path} has records of the wrong shape for stage(s) {bad}"}
    state.setdefault("stages", {})
    return state


def input_fingerprints(stage: Stage) -> dict[str, str]:
    """The content fingerprint of each local input of a stage (model, data, classifier...), by path: a stage whose
    inputs changed since it finished (a model retrained in place, a data file edited) is rerun, not skipped."""
    from .fingerprints import fingerprint_path

    return {item.path: fingerprint_path(item.path) for item in stage_inputs(stage) if Path(item.path).exists()}


# Reasons for which a sharded stage (`label`, `build-sft`) starts over instead of resuming its folder: its input or the
# user asks for new results. Resuming would keep (or mix in) the shards computed from the old input.
_START_OVER = ("--force", "its input is rerun", "its input changed", "a stage it reads from")


def _stage_to_run(stage: Stage, reason: str) -> Stage:
    if stage.command not in ("label", "build-sft") or not reason.startswith(_START_OVER):
        return stage
    if stage.workers is not None:
        # Each worker with `overwrite_output_dir` would delete the others' shards: the folder is cleared once, before
        # the workers start (`run_workers`)
        return dataclasses.replace(stage, start_over=True)
    if isinstance(stage.args, Mapping):
        args: Any = {**stage.args, "overwrite_output_dir": True}
    else:
        args = [*stage.args, "--overwrite_output_dir", "true"]
    return dataclasses.replace(stage, args=args)


def _write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    from .shards import write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / PIPELINE_STATE, state)


def validate_stage_arguments(stage: Stage) -> None:
    """Parses a stage's arguments with its command's strict parser, so that a bad key or value in any stage fails
    before the first stage runs; a training stage's `report_to` trackers must be installed. On a machine without CUDA,
    training stages are parsed with `use_cpu` (a `bf16` recipe is refused by transformers there); the stage itself runs
    with the recipe as written."""
    if stage.module is not None:
        return
    import importlib

    from .cli import COMMANDS

    module = importlib.import_module(COMMANDS[stage.command])
    parser = module.make_parser()
    argv = stage.argv()
    if stage.command in TRAINING:
        import torch

        if not torch.cuda.is_available():
            argv += ["--use_cpu", "true"]
    environ = dict(os.environ)
    try:
        from .scripts.arguments import parse_args_strict
        from .scripts.training import check_trackers

        parsed = parse_args_strict(parser, argv)
        # A tracker that is not installed would stop a training stage after hours of generation and labeling
        for args in parsed if stage.command in TRAINING else ():
            if hasattr(args, "report_to"):
                check_trackers(args)
    except (ValueError, TypeError, SystemExit) as error:
        hint = (
            " In a pipeline file, set it in the stage's `args:` (`report_to: none`), not on the `pipeline` command line."
            if "report_to" in str(error)
            else ""
        )
        raise PipelineError(f"Stage {stage.label} ({stage.shell()}): {error}{hint}") from error
    finally:  # a recipe's `env:` block must not leak into the next stage's check
        os.environ.clear()
        os.environ.update(environ)


def missing_requirements(stages: Sequence[Stage], selected: Sequence[Stage]) -> list[str]:
    """What this machine lacks to run the `selected` stages, beyond their arguments: local inputs that no earlier
    stage writes, the extras their settings need (DeepSpeed, vLLM), and a GPU for stages launched on GPUs."""
    import importlib.util

    from .inputs import looks_local

    missing = []
    has_cuda = None
    for stage in selected:
        index = list(stages).index(stage)
        for item in stage_inputs(stage):
            if item.path in ("None", "") or Path(item.path).exists() or producer_of(item.path, stages, index):
                continue
            if looks_local(item.path):
                missing.append(
                    f"`{item.path}` ({item.field} of stage `{stage.name}`): no such file or folder here, and no stage "
                    "of this pipeline writes it."
                )
        config = str(stage.accelerate_config or "")
        if ("zero" in config or "deepspeed" in config) and importlib.util.find_spec("deepspeed") is None:
            missing.append(f"deepspeed (stage `{stage.name}`: accelerate_config {config}): `pip install deepspeed`.")
        values = stage.values() if stage.module is None else {}
        if str(values.get("backend", "")) == "vllm" and importlib.util.find_spec("vllm") is None:
            missing.append(f"vllm (stage `{stage.name}`: backend vllm): `pip install trl-presafety[vllm]`.")
        if config:
            if has_cuda is None:
                import torch

                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                missing.append(
                    f"a CUDA GPU (stage `{stage.name}` launches with accelerate_config {config}, written for GPUs)."
                )
    return missing


@dataclass
class StagePlan:
    stage: Stage
    action: str  # "run", "skip", "not selected"
    reason: str


def plan(
    stages: Sequence[Stage],
    state: Mapping[str, Any],
    paths: Sequence[str],
    only: Sequence[str] | None = None,
    force: Sequence[str] = (),
) -> list[StagePlan]:
    """What each stage will do, from the recorded state and the outputs on disk (stages that an earlier stage of this
    run writes for are rerun when it runs)."""
    records = state.get("stages", {})
    plans: list[StagePlan] = []
    reran: set[str] = set()
    for index, stage in enumerate(stages):
        if not set(stage.paths) & set(paths) or (only and stage.name not in only):
            plans.append(StagePlan(stage, "not selected", f"paths {list(stage.paths)}" if not only else "--stages"))
            continue
        record = records.get(stage.name, {})
        upstream = {p.name for item in stage_inputs(stage) if (p := producer_of(item.path, stages, index))}
        if stage.name in force:
            reason = "--force"
        elif upstream & reran:
            reason = f"its input is rerun by {', '.join(sorted(upstream & reran))}"
        elif not record.get("complete"):
            if state.get("damaged"):
                reason = f"no usable record: {state['damaged']}"
            else:
                reason = "not finished yet" if not record else "its last run did not finish"
        elif record.get("fingerprint") != stage.fingerprint():
            reason = "its arguments changed since it finished"
        elif any(record.get("upstream", {}).get(p) != records.get(p, {}).get("finished_at") for p in upstream):
            reason = "a stage it reads from finished again since"
        elif changed := _changed_inputs(record, stage):
            reason = f"its input changed since it finished (content fingerprint of {', '.join(changed)})"
        elif not output_complete(stage):
            reason = "its output is missing or incomplete"
        else:
            plans.append(StagePlan(stage, "skip", "complete"))
            continue
        reran.add(stage.name)
        plans.append(StagePlan(stage, "run", reason))
    return plans


def _changed_inputs(record: Mapping[str, Any], stage: Stage) -> list[str]:
    recorded = record.get("inputs")
    if not isinstance(recorded, Mapping):  # recorded by an older version: nothing to compare
        return []
    current = input_fingerprints(stage)
    return sorted(path for path in set(recorded) | set(current) if recorded.get(path) != current.get(path))


def run_pipeline(
    config: str | Path,
    paths: Sequence[str] | None = None,
    only: Sequence[str] | None = None,
    force: Sequence[str] = (),
    dry_run: bool = False,
    runner: Callable[[Stage], int] | None = None,
    echo: Callable[[str], None] = print,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """Runs the pipeline file `config` (in `run_dir` instead of the file's when given); returns the pipeline state
    (with each stage's wall time). `runner` runs one stage and returns its exit code (default: a subprocess)."""
    run_dir, default_paths, stages = load_pipeline(config, run_dir)
    paths = tuple(paths or default_paths)
    names = [stage.name for stage in stages]
    for name in [*(only or []), *force]:
        if name not in names:
            raise PipelineError(f"Unknown stage {name!r}{_close(name, names)}. The stages of {config}: {names}.")
    selected = [s for s in stages if set(s.paths) & set(paths) and (not only or s.name in only)]
    # A dry run shows the whole plan on any machine: what would stop a real run is listed at the end, not raised
    missing: list[str] = []
    for stage in selected:
        try:
            validate_stage_arguments(stage)
        except PipelineError as error:
            if not dry_run:
                raise
            missing.append(str(error))
    if dry_run:
        missing += missing_requirements(stages, selected)
    run_dir = Path(run_dir)
    state = _read_state(run_dir)
    state.setdefault("stages", {})
    state["config"] = str(config)
    plans = plan(stages, state, paths, only, force)
    width = max(len(name) for name in names)
    echo(f"Pipeline {config} (paths: {', '.join(paths)}; state: {run_dir / PIPELINE_STATE}):")
    if state.get("damaged"):
        echo(f"  Warning: {state['damaged']}; no stage counts as finished, every selected stage runs again.")
    for item in plans:
        echo(f"  {item.stage.name:<{width}}  {item.action:<12}  {item.reason}")
    if dry_run:
        for item in plans:
            if item.action == "run":
                echo(worker_plan(item.stage) if item.stage.workers else f"  $ {item.stage.shell()}")
        if missing:
            echo(f"\nDry run only. Before this pipeline can run here, {len(missing)} thing(s) are missing:")
            echo("\n".join(f"  - {line}" for line in missing))
        else:
            echo("\nDry run only. Nothing missing: the selected stages can run on this machine.")
        state["missing"] = missing
        return state
    runner = runner or _run_subprocess
    for index, item in enumerate(plans):
        stage = item.stage
        if item.action != "run":
            continue
        for needed in stage_inputs(stage):
            check_input(stage, needed, stages, index)
        running = _stage_to_run(stage, item.reason)
        echo(f"\n=== Stage {stage.name}: {running.shell()}")
        if running.workers is not None:
            echo(worker_plan(running))
        record = {
            "complete": False,
            "fingerprint": stage.fingerprint(),
            "command": running.shell(),
            "inputs": input_fingerprints(stage),
        }
        state["stages"][stage.name] = record
        state.pop("damaged", None)
        _write_state(run_dir, state)
        start = time.monotonic()
        code = runner(running)
        record["seconds"] = round(time.monotonic() - start, 1)
        if code != 0:
            _write_state(run_dir, state)
            raise PipelineError(
                f"Stage {stage.label} failed (exit code {code}) after {record['seconds']} s: {stage.shell()}. Fix the "
                f"cause and rerun the same pipeline command: finished stages are skipped, and label / build-sft "
                "resume from their last finished shard."
            )
        upstream = {p.name for needed in stage_inputs(stage) if (p := producer_of(needed.path, stages, index))}
        record.update(
            complete=True,
            finished_at=time.time(),
            upstream={name: state["stages"].get(name, {}).get("finished_at") for name in sorted(upstream)},
        )
        _write_state(run_dir, state)
    echo(summary(plans, state))
    return state


def _run_subprocess(stage: Stage) -> int:
    if stage.workers is not None:
        return run_workers(stage)
    return subprocess.run(stage.command_line(), check=False).returncode


def worker_plan(stage: Stage) -> str:
    """How a stage's workers run, with the command line of each: the plan's (and the dry run's) lines for it."""
    workers = stage.workers
    assert workers is not None
    folder = stage_outputs(stage)[0]
    if workers.launch == "local":
        gpus = f", {workers.gpus_per_worker} GPU(s) each" if workers.gpus_per_worker else ""
        lines = [f"  runs as {workers.count} workers started here{gpus}; the next stage waits for {folder}:"]
        lines += [f"  $ {stage.worker_shell(i)}" for i in range(workers.count)]
        return "\n".join(lines)
    return "\n".join(
        [
            f"  runs as {workers.count} workers that you start, on any machines that see {folder} (e.g. a Slurm array "
            f"`sbatch --array=0-{workers.count - 1}` whose task runs the line below with $SLURM_ARRAY_TASK_ID); the "
            f"pipeline waits until the folder is complete (checked every {workers.poll_seconds:g} s):",
            f"  $ {stage.worker_shell('$SLURM_ARRAY_TASK_ID')}",
        ]
    )


def _progress(stage: Stage) -> str:
    status = (
        label_folder_status(stage_outputs(stage)[0]) if Path(stage_outputs(stage)[0], STATE_FILE).is_file() else {}
    )
    if "num_shards" not in status:
        return "no shard written yet"
    return f"{status['shards_done']} of {status['num_shards']} shards done"


def clear_outputs(stage: Stage, echo: Callable[[str], None] = print) -> None:
    """Deletes a sharded stage's shards, state and claims once, before its workers start over; refuses while a live
    worker holds a claim there (it would go on writing shards of the old input)."""
    import shutil

    from .shards import CLAIMS_DIR, live_claims

    for output in stage_outputs(stage):
        folder = Path(output)
        others = live_claims(folder)
        if others:
            raise PipelineError(
                f"Stage {stage.label} must start over (its input changed), but {len(others)} worker(s) still compute "
                f"shards in {folder} ({[c['claim'] for c in others]}). Stop them, then rerun the pipeline."
            )
        shutil.rmtree(folder / SHARDS_DIR, ignore_errors=True)
        shutil.rmtree(folder / CLAIMS_DIR, ignore_errors=True)
        (folder / STATE_FILE).unlink(missing_ok=True)
        echo(f"Stage {stage.name}: cleared {folder} (its input changed); the workers start over.")


def run_workers(stage: Stage, echo: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> int:
    """Runs a generation stage as its workers and returns once its output folder is complete (0), or a worker's
    non-zero exit code.

    `local`: starts the workers here (each on its own `gpus_per_worker` GPUs when set), waits for them; if shards are
    still missing once they all ended (one ended early, or a shard's claim was left by a dead process), one more
    process (`--num_workers 1`) takes them. `external`: waits until the folder is complete, checking every
    `poll_seconds`; the pipeline can be stopped and rerun meanwhile, the workers do not depend on it."""
    workers = stage.workers
    assert workers is not None
    if stage.start_over:
        clear_outputs(stage, echo)
    if workers.launch == "external":
        last = None
        while not output_complete(stage):
            progress = _progress(stage)
            if progress != last:
                echo(f"Stage {stage.name}: waiting for its workers: {progress}.")
                last = progress
            sleep(workers.poll_seconds)
        return 0
    environments = [None] * workers.count
    if workers.gpus_per_worker:
        from .vllm_data_parallel import visible_devices

        devices = visible_devices()
        needed = workers.count * workers.gpus_per_worker
        if needed > len(devices):
            raise PipelineError(
                f"Stage {stage.label}: {workers.count} workers x {workers.gpus_per_worker} GPU(s) need {needed} GPUs, "
                f"{len(devices)} are visible. Lower `workers.count` or `workers.gpus_per_worker`, or use "
                "`launch: external` and start workers on other machines."
            )
        groups = [
            devices[i * workers.gpus_per_worker : (i + 1) * workers.gpus_per_worker] for i in range(workers.count)
        ]
        environments = [{**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]
    processes = [
        subprocess.Popen(stage.command_line() + stage.worker_argv(i), env=environments[i])
        for i in range(workers.count)
    ]
    codes = [process.wait() for process in processes]
    failed = [(i, code) for i, code in enumerate(codes) if code != 0]
    if failed:
        echo(f"Stage {stage.name}: worker(s) {[i for i, _ in failed]} failed (exit codes {[c for _, c in failed]}).")
        return failed[0][1]
    if not output_complete(stage):
        echo(f"Stage {stage.name}: {_progress(stage)} after its workers ended; one more worker takes what is left.")
        code = subprocess.run(stage.command_line(), check=False).returncode
        if code != 0 or not output_complete(stage):
            return code or 1
    return 0


def summary(plans: Sequence[StagePlan], state: Mapping[str, Any]) -> str:
    """The table printed at the end: each stage, what happened, its wall time; then where the comparisons are."""
    lines = ["", "| stage | status | wall time (s) |", "|---|---|---:|"]
    for item in plans:
        record = state["stages"].get(item.stage.name, {})
        status = {"run": "ran", "skip": "skipped (complete)"}.get(item.action, item.action)
        seconds = record.get("seconds", "") if item.action == "run" else ""
        lines.append(f"| {item.stage.name} | {status} | {seconds} |")
    for item in plans:
        if item.stage.command == "eval-compare" and item.action in ("run", "skip"):
            folder = Path(stage_outputs(item.stage)[0])
            lines.append(f"Comparison ({item.stage.name}): {folder / 'compare.md'}; plot: {folder / 'compare.png'}")
    return "\n".join(lines)
