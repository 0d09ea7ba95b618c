# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety pipeline`: the pipeline file's checks, the skip/rerun plan, the input checks that name the stage that
should have produced an input, resuming after a failed stage (all with a fake runner, no subprocess), the real-model
pipeline files' upfront validation, and the tiny chain run for real (reduced, then the shipped file as a slow test)."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from trl_presafety.labeling.state import STATE_FILE
from trl_presafety.pipeline.config import PipelineError, Stage, load_pipeline
from trl_presafety.pipeline.run import PIPELINE_STATE, plan, run_pipeline
from trl_presafety.pipeline.stage_io import check_input, stage_inputs
from trl_presafety.shards import shard_path, write_json_atomic, write_parquet_atomic


ROOT = Path(__file__).parents[1]

# model (a module stage) -> eval -> eval-compare: commands whose parsers are cheap and whose outputs the fake writes
STAGES = [
    {"name": "model", "module": "trl_presafety.tiny", "args": {"output_dir": "${run_dir}/model"},
     "outputs": ["${run_dir}/model/model.safetensors"]},
    {"name": "eval-a", "command": "eval",
     "args": {"model_name_or_path": "${run_dir}/model", "output_dir": "${run_dir}/eval-a", "datasets": ["smoke"]}},
    {"name": "eval-b", "command": "eval",
     "args": {"model_name_or_path": "${run_dir}/model", "output_dir": "${run_dir}/eval-b", "datasets": ["smoke"]}},
    {"name": "compare", "command": "eval-compare",
     "args": {"reports": ["${run_dir}/eval-a/report.json", "${run_dir}/eval-b/report.json"],
              "output_dir": "${run_dir}/compare"}},
]  # fmt: skip


def write_pipeline(tmp_path: Path, stages: list | None = None, **top) -> Path:
    path = tmp_path / "pipeline.yaml"
    content = {"run_dir": str(tmp_path / "run"), "stages": STAGES if stages is None else stages, **top}
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


class FakeRunner:
    """Writes what each stage's completeness check looks for, records the stages run, fails the stages in `fail`."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, stage: Stage) -> int:
        self.calls.append(stage.name)
        if stage.name in self.fail:
            return 1
        values = stage.values()
        if stage.module is not None:
            for output in stage.outputs:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                Path(output).write_text("weights")
        else:
            out = Path(values["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            (out / {"eval": "report.json", "eval-compare": "compare.md"}[stage.command]).write_text("{}")
        return 0


def run(config: Path, runner: FakeRunner, **kwargs) -> dict:
    return run_pipeline(config, runner=runner, echo=lambda line: None, **kwargs)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"run_dir": "r", "stage": []}, r"Unknown key\(s\) in pipeline file .*: `stage` \(did you mean `stages`\?\)"),
        ({"run_dir": "r", "stages": [{"name": "a", "comand": "eval"}]}, r"unknown key `comand`.*`command`"),
        ({"run_dir": "r", "stages": [{"name": "a", "command": "evall"}]}, r"unknown command 'evall'.*`eval`"),
        (
            {"run_dir": "r", "stages": [{"name": "a", "command": "eval"}, {"name": "a", "command": "eval"}]},
            "unique `name`, got 'a'",
        ),
        ({"run_dir": "r", "stages": [{"name": "a", "command": "eval", "paths": ["ppo"]}]}, "unknown path 'ppo'"),
        ({"run_dir": "r", "stages": [{"name": "a", "module": "m"}]}, "needs `outputs`"),
        ({"run_dir": "r", "stages": [{"name": "a", "command": "eval", "accelerate_config": "zero3"}]}, "training"),
        ({"stages": [{"name": "a", "command": "eval"}]}, "`run_dir` is required"),
    ],
)
def test_load_errors(tmp_path, content, match):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(PipelineError, match=match):
        load_pipeline(path)


def test_run_dir_substitution_and_override(tmp_path):
    run_dir, paths, stages = load_pipeline(write_pipeline(tmp_path), run_dir=str(tmp_path / "other"))
    assert run_dir == str(tmp_path / "other") and paths == ("sft",)
    assert stages[1].values()["output_dir"] == f"{tmp_path}/other/eval-a"
    assert stages[3].values()["reports"][0] == f"{tmp_path}/other/eval-a/report.json"


def test_bad_stage_arguments_fail_before_anything_runs(tmp_path):
    stages = [*STAGES[:3], {**STAGES[3], "args": {**STAGES[3]["args"], "output_dirr": "x"}}]
    runner = FakeRunner()
    with pytest.raises(PipelineError, match="`compare`.*output_dirr"):
        run(write_pipeline(tmp_path, stages), runner)
    assert runner.calls == []


def test_complete_stages_are_skipped(tmp_path):
    config = write_pipeline(tmp_path)
    runner = FakeRunner()
    state = run(config, runner)
    assert runner.calls == ["model", "eval-a", "eval-b", "compare"]
    assert all(state["stages"][name]["complete"] for name in runner.calls)
    assert json.loads((tmp_path / "run" / PIPELINE_STATE).read_text())["stages"]["compare"]["complete"]
    runner = FakeRunner()
    run(config, runner)
    assert runner.calls == []


def test_changed_arguments_rerun_the_stage_and_what_reads_it(tmp_path):
    run(write_pipeline(tmp_path), FakeRunner())
    stages = [STAGES[0], {**STAGES[1], "args": {**STAGES[1]["args"], "seed": 1}}, *STAGES[2:]]
    runner = FakeRunner()
    run(write_pipeline(tmp_path, stages), runner)
    assert runner.calls == ["eval-a", "compare"]  # not model, not eval-b


def test_missing_output_reruns_the_stage_and_what_reads_it(tmp_path):
    config = write_pipeline(tmp_path)
    run(config, FakeRunner())
    (tmp_path / "run" / "eval-a" / "report.json").unlink()
    runner = FakeRunner()
    run(config, runner)
    assert runner.calls == ["eval-a", "compare"]  # not model, not eval-b


def test_force_reruns_downstream_and_stages_selects(tmp_path):
    config = write_pipeline(tmp_path)
    run(config, FakeRunner())
    runner = FakeRunner()
    run(config, runner, force=["model"])
    assert runner.calls == ["model", "eval-a", "eval-b", "compare"]
    runner = FakeRunner()
    run(config, runner, only=["eval-a"], force=["eval-a"])
    assert runner.calls == ["eval-a"]
    # compare was not selected: its input finished again since, so the next full run reruns it
    runner = FakeRunner()
    run(config, runner)
    assert runner.calls == ["compare"]
    with pytest.raises(PipelineError, match=r"Unknown stage 'evala' \(did you mean `eval-a`\?\)"):
        run(config, FakeRunner(), force=["evala"])


def test_paths_select_stages(tmp_path):
    stages = [STAGES[0], {**STAGES[1], "paths": ["dpo"]}]
    _, _, loaded = load_pipeline(write_pipeline(tmp_path, stages))
    actions = [item.action for item in plan(loaded, {}, ["sft"])]
    assert actions == ["run", "not selected"]
    assert [item.action for item in plan(loaded, {}, ["dpo"])] == ["run", "run"]


def test_failed_stage_is_not_complete_and_the_rerun_resumes_at_it(tmp_path):
    config = write_pipeline(tmp_path)
    runner = FakeRunner(fail=("eval-a",))
    with pytest.raises(PipelineError, match="Stage `eval-a` failed \\(exit code 1\\)"):
        run(config, runner)
    assert runner.calls == ["model", "eval-a"]
    state = json.loads((tmp_path / "run" / PIPELINE_STATE).read_text())
    assert state["stages"]["model"]["complete"] and not state["stages"]["eval-a"]["complete"]
    runner = FakeRunner()
    run(config, runner)
    assert runner.calls == ["eval-a", "eval-b", "compare"]  # not model


def sft_pipeline(tmp_path: Path) -> list[Stage]:
    """build-sft -> label -> sft, loaded (nothing runs)."""
    stages = [
        {"name": "build-sft", "command": "build-sft", "args": {"output_dir": "${run_dir}/sft-data"}},
        {"name": "label", "command": "label",
         "args": {"dataset_name": "${run_dir}/sft-data", "output_dir": "${run_dir}/labels"}},
        {"name": "sft", "command": "sft", "args": {"dataset_name": "${run_dir}/labels", "output_dir": "${run_dir}/o"}},
        {"name": "sft-raw", "command": "sft",
         "args": {"dataset_name": "${run_dir}/sft-data", "output_dir": "${run_dir}/o2"}},
    ]  # fmt: skip
    return load_pipeline(write_pipeline(tmp_path, stages))[2]


def dataset_input(stage: Stage):
    return next(item for item in stage_inputs(stage) if item.key == "dataset_name")


def write_folder(folder: Path, rows: list[dict], shards_done: int, num_shards: int) -> None:
    """A sharded output folder (label / build-sft) with `shards_done` of its `num_shards` shards written."""
    for index in range(shards_done):
        write_parquet_atomic(Dataset.from_list(rows), shard_path(folder, "train", index, num_shards))
    state = {"num_shards": num_shards, "shard_size": len(rows), "num_rows": len(rows) * num_shards, "split": "train"}
    write_json_atomic(folder / STATE_FILE, {**state, "complete": shards_done == num_shards, "command": "label"})


def test_check_input_missing_folder_names_the_producer(tmp_path):
    stages = sft_pipeline(tmp_path)
    with pytest.raises(PipelineError, match=r"Stage `label` \(label\).*does not exist.*stage `build-sft`"):
        check_input(stages[1], dataset_input(stages[1]), stages, 1)


def test_check_input_incomplete_label_folder_names_the_producer(tmp_path):
    stages = sft_pipeline(tmp_path)
    row = {"prompt": "p", "completion": "c", "safety_label": 1}
    write_folder(tmp_path / "run" / "labels", [row], shards_done=1, num_shards=2)
    with pytest.raises(PipelineError, match=r"Stage `sft`.*is not complete.*1 of 2 shards.*stage `label`"):
        check_input(stages[2], dataset_input(stages[2]), stages, 2)
    write_folder(tmp_path / "run" / "labels", [row], shards_done=2, num_shards=2)
    check_input(stages[2], dataset_input(stages[2]), stages, 2)  # complete: passes


def test_check_input_missing_column_names_the_producer(tmp_path):
    stages = sft_pipeline(tmp_path)
    # build-sft's rows have no safety_label: an sft stage reading them directly, not the labels, is refused
    write_folder(tmp_path / "run" / "sft-data", [{"prompt": "p", "completion": "c"}], shards_done=1, num_shards=1)
    with pytest.raises(PipelineError, match=r"Stage `sft-raw`.*no column\(s\) \['safety_label'\].*stage `build-sft`"):
        check_input(stages[3], dataset_input(stages[3]), stages, 3)
    # a prompt-only dataset: no completion for SFT
    write_folder(tmp_path / "run" / "sft-data", [{"prompt": "p", "safety_label": 1}], shards_done=1, num_shards=1)
    with pytest.raises(PipelineError, match=r"prompt\+completion.*stage `build-sft`"):
        check_input(stages[3], dataset_input(stages[3]), stages, 3)


def _never_run(stage):
    raise AssertionError(f"stage {stage.name} ran")


@pytest.mark.parametrize("model", ["DeepSeek-R1-Distill-Qwen-7B", "Qwen3-8B", "tiny"])
def test_shipped_pipelines_validate(model, capsys, monkeypatch):
    # The real recipes' upfront checks on this machine: every stage's arguments parse (training stages with use_cpu),
    # every recipe exists, and the dry run prints each stage's command line
    monkeypatch.chdir(ROOT)
    config = f"recipes/{model}/pipeline.yaml"
    if model != "tiny":
        # Their training recipes log to trackio: without it a run stops before the first stage, not at training...
        import transformers.integrations

        available = transformers.integrations.get_available_reporting_integrations()
        monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: [])
        with pytest.raises(PipelineError, match=r"Stage `presafety-sft` .*trackio is not installed.*\[tracking\]"):
            run_pipeline(config, paths=["sft"], run_dir="/nonexistent/run", runner=_never_run)
        # ... while a dry run shows the whole plan on any machine and lists what is missing at the end
        state = run_pipeline(config, paths=["sft"], dry_run=True, run_dir="/nonexistent/run")
        out = capsys.readouterr().out
        assert "$ trl-presafety sft --accelerate_config" in out and "$ trl-presafety eval-compare" in out
        tail = out.split("Dry run only. Before this pipeline can run here,", 1)[1]
        assert "trackio is not installed" in tail and "`report_to: none`" in tail
        assert any("Stage `presafety-sft`" in line and "trackio" in line for line in state["missing"])
        monkeypatch.setattr(
            transformers.integrations, "get_available_reporting_integrations", lambda: [*available, "trackio"]
        )
    # Every path the shipped pipelines have, so that every stage is selected and shows its command line
    run_pipeline(config, paths=["sft", "dpo", "self_routing"], dry_run=True, run_dir="/nonexistent/run")
    out = capsys.readouterr().out
    _, _, stages = load_pipeline(config)
    assert all(f"  {stage.name} " in out for stage in stages)
    assert out.count("$ ") == len(stages)
    assert "trl-presafety eval-compare" in out and "trl-presafety dpo" in out
    if model != "tiny":
        assert "--accelerate_config" in out


def reduced_tiny_pipeline(tmp_path: Path, model: str, classifier: str) -> Path:
    """The shipped tiny SFT path cut to seconds: a prebuilt model and a random classifier (so refusal cues judge
    build-sft's answers), 20 prompts, two steps."""
    config = yaml.safe_load((ROOT / "recipes" / "tiny" / "pipeline.yaml").read_text())
    overrides = {
        "build-sft": {"model_name_or_path": model, "classifier_path": classifier, "prompts": ["tiny@20"],
                      "max_new_tokens": 8, "num_samples": 1, "shard_size": 10, "answer_judge": "cues"},
        "label": {"model_name_or_path": model, "classifier_name_or_path": classifier, "max_new_tokens": 8},
        "presafety-sft": {"model_name_or_path": model, "max_steps": 2, "max_length": 64, "logging_steps": 1},
        "plain-sft": {"model_name_or_path": model, "max_steps": 2, "max_length": 64, "logging_steps": 1},
        "eval-presafety-sft": {"max_new_tokens": 8, "sampling_grid": ["greedy"]},
        "eval-plain-sft": {"max_new_tokens": 8, "sampling_grid": ["greedy"]},
        "eval-presafety-sft-routed": {"max_new_tokens": 8, "sampling_grid": ["greedy"], "route_threshold": 0.0},
    }  # fmt: skip
    stages = []
    for stage in config["stages"]:
        if stage["name"] in ("model", "classifier") or "sft" not in stage.get("paths", ["sft"]):
            continue
        stages.append({**stage, "args": {**stage["args"], **overrides.get(stage["name"], {})}})
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": stages}, sort_keys=False))
    return path


def test_tiny_chain_end_to_end(tmp_path, tiny_model_dirs, monkeypatch, capsys):
    # build-sft -> label -> PreSafety SFT and plain SFT -> eval of both (and routed) -> eval-compare, in order, each
    # stage from the command line the pipeline builds: the first as the default runner starts it (a subprocess), the
    # others through the same `cli.main` in this process (a new interpreter per stage costs ~5 s and tests nothing new)
    from trl_presafety.pipeline.run import _run_subprocess

    from .test_classifier import build_tiny_classifier
    from .testing_utils import run_stage_in_process

    monkeypatch.chdir(ROOT)  # the recipes' paths are relative to the repository root
    classifier = build_tiny_classifier(tmp_path / "classifier")
    config = reduced_tiny_pipeline(tmp_path, tiny_model_dirs["qwen3"], classifier)
    ran = []

    def runner(stage: Stage) -> int:
        ran.append(stage.name)
        return _run_subprocess(stage) if len(ran) == 1 else run_stage_in_process(stage)

    state = run_pipeline(config, runner=runner)
    assert ran[0] == "build-sft" and len(ran) == 8
    out = capsys.readouterr().out
    names = ["build-sft", "label", "presafety-sft", "plain-sft", "eval-presafety-sft", "eval-plain-sft",
             "eval-presafety-sft-routed", "compare-sft"]  # fmt: skip
    assert all(state["stages"][name]["complete"] for name in names)
    compare = tmp_path / "run" / "compare-sft"
    assert (compare / "compare.md").is_file() and (compare / "compare.png").is_file()
    assert f"{compare / 'compare.md'}; plot: {compare / 'compare.png'}" in out
    report = json.loads((tmp_path / "run" / "eval-plain-sft" / "report.json").read_text())
    assert report["run_name"] == "plain-sft"
    # The routed eval stage: the PreSafety model's own head routes every thinking-on prompt at threshold 0
    routed = json.loads((tmp_path / "run" / "eval-presafety-sft-routed" / "report.json").read_text())
    assert routed["routing"]["policy"] == "no_think" and routed["routing"]["gate"].endswith("presafety-sft")
    assert routed["summary"]["modes"]["on"]["routed_rate"] == 1.0
    assert "Routed by the pre-CoT gate" in (compare / "compare.md").read_text()
    # the rerun skips every stage
    runner = FakeRunner()
    run(config, runner)
    assert runner.calls == []


@pytest.mark.slow  # `make slow_tests`
def test_shipped_tiny_pipeline(tmp_path, monkeypatch):
    # `make pipeline-tiny` (the SFT path), into tmp_path, as shipped: about 2 min on 2 CPU cores
    monkeypatch.chdir(ROOT)
    state = run_pipeline("recipes/tiny/pipeline.yaml", run_dir=str(tmp_path / "run"))
    assert all(record["complete"] for record in state["stages"].values())
    assert (tmp_path / "run" / "compare-sft" / "compare.md").is_file()


def test_gate_stages_are_complete_only_once_written_to_the_end(tmp_path):
    """fit-gate writes the head, its config, then the tokenizer; export-gate the weights, the tokenizer, then the
    card: a stage stopped before its last file reruns."""
    from trl_presafety.pipeline.stage_io import output_complete

    fit = Stage(name="gate", command="fit-gate", args={"output_dir": str(tmp_path / "gate")})
    export = Stage(name="cls", command="export-gate", args={"output_dir": str(tmp_path / "cls")})
    assert not output_complete(fit) and not output_complete(export)
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "safety_head.safetensors").write_text("")
    (tmp_path / "gate" / "safety_head_config.json").write_text("{}")
    assert not output_complete(fit)
    (tmp_path / "gate" / "tokenizer_config.json").write_text("{}")
    assert output_complete(fit)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "config.json").write_text("{}")
    assert not output_complete(export)
    (tmp_path / "cls" / "README.md").write_text("")
    assert output_complete(export)
