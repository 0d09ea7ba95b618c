# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A pipeline's generation stage run as shard workers (`workers:`): the file's checks, the plan's command lines, the
wait for a folder that external workers complete, and a `label` stage run by two local worker processes."""

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from trl_presafety.labeling import load_labeled_dataset
from trl_presafety.labeling.state import label_folder_status
from trl_presafety.pipeline.config import PipelineError, load_pipeline
from trl_presafety.pipeline.run import run_pipeline, run_workers, worker_plan
from trl_presafety.tiny import TINY_DATA_DIR

from .test_pipeline import FakeRunner, run


EVAL_PROMPTS = TINY_DATA_DIR / "eval" / "train.jsonl"


def label_stage(model: str = "m", classifier: str = "c", **extra) -> dict:
    args = {"model_name_or_path": model, "classifier_name_or_path": classifier, "dataset_name": str(EVAL_PROMPTS),
            "output_dir": "${run_dir}/labels", "max_samples": 4, "shard_size": 2, "backend": "transformers",
            "max_new_tokens": 8}  # fmt: skip
    return {"name": "label", "command": "label", "args": args, **extra}


def write(tmp_path: Path, stages: list) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": stages}, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("workers", "match"),
    [
        ({"count": 0}, r"invalid `workers.count`: 0. Use the number of workers, >= 1"),
        ({"count": 2, "launch": "slurm"}, r"invalid `workers.launch`: 'slurm'. Use `local`.*or `external`"),
        ({"count": 2, "cuont": 1}, r"unknown key `workers.cuont` \(did you mean `count`\?\)"),
        ({"count": 2, "launch": "external", "gpus_per_worker": 1}, r"`workers.gpus_per_worker` applies to `launch"),
        ({"count": 2, "poll_seconds": 0}, r"invalid `workers.poll_seconds`: 0"),
        ("four", r"`workers` is a mapping such as `\{count: 4, launch: local\}`"),
    ],
)
def test_bad_workers_fail_clearly(tmp_path, workers, match):
    with pytest.raises(PipelineError, match=match):
        load_pipeline(write(tmp_path, [label_stage(workers=workers)]))


def test_workers_only_on_sharded_generation_stages(tmp_path):
    stage = {"name": "e", "command": "eval", "args": {"model_name_or_path": "m"}, "workers": 2}
    with pytest.raises(PipelineError, match=r"`workers` runs a sharded generation command \(label, build-sft\)"):
        load_pipeline(write(tmp_path, [stage]))
    stage = label_stage(workers=2)
    stage["args"]["worker_index"] = 1
    with pytest.raises(PipelineError, match=r"`args` sets \['worker_index'\], which `workers` sets for each worker"):
        load_pipeline(write(tmp_path, [stage]))


def test_the_plan_says_how_many_workers_and_how_to_launch_them(tmp_path):
    config = write(tmp_path, [label_stage(workers=3), {**label_stage(workers={"count": 8, "launch": "external"}),
                                                       "name": "label-2"}])  # fmt: skip
    _, _, stages = load_pipeline(config)
    assert stages[0].workers.count == 3 and stages[0].workers.launch == "local"
    local = worker_plan(stages[0]).splitlines()
    assert local[0].startswith("  runs as 3 workers started here; the next stage waits for")
    assert [line.split()[-4:] for line in local[1:]] == [["--num_workers", "3", "--worker_index", str(i)]
                                                          for i in range(3)]  # fmt: skip
    assert all(line.startswith("  $ trl-presafety label ") for line in local[1:])
    external = worker_plan(stages[1])
    assert "runs as 8 workers that you start" in external and "sbatch --array=0-7" in external
    assert external.endswith("--num_workers 8 --worker_index $SLURM_ARRAY_TASK_ID")
    # The worker count is how the stage runs, not what it computes: changing it does not rerun a finished stage
    assert stages[0].fingerprint() == load_pipeline(write(tmp_path, [label_stage(workers=5)]))[2][0].fingerprint()


def _complete_later(folder: Path, delay: float) -> None:
    """What external workers leave behind: a label folder whose last shard lands after `delay` seconds."""
    from datasets import Dataset

    from trl_presafety.shards import ShardedJob

    job = ShardedJob({"labels": folder}, {"command": "label"}, ("command",), num_rows=4, shard_size=2)
    job.write(0, {"labels": Dataset.from_dict({"prompt": ["a", "b"]})})
    time.sleep(delay)
    job.write(1, {"labels": Dataset.from_dict({"prompt": ["c", "d"]})})
    job.finish()


def test_external_workers_the_pipeline_waits_for_the_folder(tmp_path):
    config = write(tmp_path, [label_stage(workers={"count": 2, "launch": "external", "poll_seconds": 0.05})])
    _, _, (stage,) = load_pipeline(config)
    folder = tmp_path / "run" / "labels"
    writer = threading.Thread(target=_complete_later, args=(folder, 0.5))
    messages = []
    writer.start()
    try:
        assert run_workers(stage, echo=messages.append) == 0
    finally:
        writer.join()
    assert label_folder_status(folder)["complete"]
    assert "Stage label: waiting for its workers:" in messages[0]
    assert any("1 of 2 shards done" in m for m in messages)


def test_a_worker_stage_in_the_plan_and_the_run(tmp_path):
    config = write(tmp_path, [label_stage(workers=2)])
    lines = []
    run_pipeline(config, dry_run=True, echo=lines.append)
    assert sum(line.startswith("  $ ") for text in lines for line in text.splitlines()) == 2
    calls = []

    def fake(stage):  # what the default runner does for a worker stage: run the workers until the folder is complete
        calls.append(stage.workers.count)
        _complete_later(Path(stage.values()["output_dir"]), 0.0)
        return 0

    state = run_pipeline(config, runner=fake, echo=lines.append)
    assert calls == [2] and state["stages"]["label"]["complete"]
    assert any("runs as 2 workers started here" in line for line in lines)
    run(config, FakeRunner())  # complete: skipped


@pytest.mark.slow  # two `label` processes
def test_a_label_stage_runs_as_two_local_workers(tmp_path, tiny_model_dirs, monkeypatch):
    from .test_classifier import build_tiny_classifier

    monkeypatch.setenv("TQDM_DISABLE", "1")
    classifier = build_tiny_classifier(tmp_path / "classifier")
    config = write(tmp_path, [label_stage(tiny_model_dirs["qwen3"], classifier, workers=2)])
    state = run_pipeline(config)
    folder = tmp_path / "run" / "labels"
    assert state["stages"]["label"]["complete"] and label_folder_status(folder)["complete"]
    prompts = [json.loads(line)["prompt"] for line in EVAL_PROMPTS.read_text().splitlines()[:4]]
    assert load_labeled_dataset(folder)["prompt"] == prompts


def test_a_worker_stage_starts_over_by_clearing_its_folder_once(tmp_path):
    # Its input changed: one process clears the folder before the workers start (each worker with
    # overwrite_output_dir would delete the shards the others wrote)
    from trl_presafety.pipeline.run import _stage_to_run, clear_outputs
    from trl_presafety.shards import CLAIMS_DIR

    _, _, (stage,) = load_pipeline(write(tmp_path, [label_stage(workers=2)]))
    running = _stage_to_run(stage, "its input changed since it finished")
    assert running.start_over and "overwrite_output_dir" not in running.values()
    folder = tmp_path / "run" / "labels"
    _complete_later(folder, 0.0)
    claims = folder / CLAIMS_DIR
    claims.mkdir()
    (claims / "train-00000.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # fresh: looks live
    with pytest.raises(PipelineError, match=r"must start over .* 1 worker\(s\) still compute shards"):
        clear_outputs(running, echo=lambda line: None)
    (claims / "train-00000.claim").unlink()
    clear_outputs(running, echo=lambda line: None)
    assert not (folder / "data").exists() and not (folder / "labeling_state.json").exists()
