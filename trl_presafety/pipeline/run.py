# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Running a pipeline (`trl-presafety pipeline`): which stages to run and why (`plan`), each stage's arguments checked
up front, the stages run in order (as subprocesses, or as several shard workers), and `pipeline_state.json` (what
finished, with which command line and inputs, and how long it took)."""

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..labeling.state import SHARDS_DIR, STATE_FILE, label_folder_status
from .config import TRAINING, PipelineError, Stage, _close, load_pipeline
from .stage_io import check_input, missing_requirements, output_complete, producer_of, stage_inputs, stage_outputs


PIPELINE_STATE = "pipeline_state.json"


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
    from ..fingerprints import fingerprint_path

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
    from ..shards import write_json_atomic

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

    from ..cli import COMMANDS

    module = importlib.import_module(COMMANDS[stage.command])
    parser = module.make_parser()
    argv = stage.argv()
    if stage.command in TRAINING:
        import torch

        if not torch.cuda.is_available():
            argv += ["--use_cpu", "true"]
    environ = dict(os.environ)
    try:
        from ..scripts.arguments import parse_args_strict
        from ..scripts.training import check_trackers

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

    from ..shards import CLAIMS_DIR, live_claims

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
        from ..vllm_data_parallel import visible_devices

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
