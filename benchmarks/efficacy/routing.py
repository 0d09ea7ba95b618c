# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The decision-driven arms of issue 20, run with the package's commands as a user runs them:

- the self-routing data of arms (k): `trl-presafety build-self-routing` on the safety split's label folder;
- the gate of a routed arm: `trl-presafety fit-gate` on the checkpoint's own anchor states (safety-split labels), or
  the head the arm trained beside its checkpoint, then `trl-presafety calibrate-gate` on the labeled dev split (the
  threshold is never chosen on what the study evaluates);
- the routed evaluation: `trl-presafety eval --route POLICY --route_gate GATE` on the evaluation files.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .arms import ROUTED_ARMS, RoutedArm, arm_steps, gate_owner


HEAD_FILES = ("safety_head.safetensors", "safety_head_config.json")


def self_routing_stage(config: Any, layout: Any, run_cli: Callable[..., float]) -> float:
    """Self-routing SFT data: prompts the organism refuses with thinking off (`safety_label` 1) train on its own
    thinking-off answer after an immediately closed think block; the others keep their safe reasoning traces."""
    output = layout.labels / "self_routing"
    if (output / "self_routing.json").is_file():  # written last: the output is complete
        return 0.0
    argv = ["build-self-routing", "--labels", str(layout.labels / "sft"), "--output_dir", str(output)]
    return run_cli(argv, config, layout.commands)


def _calibrated(gate: Path) -> bool:
    path = gate / "safety_head_config.json"
    if not path.is_file():
        return False
    head = json.loads(path.read_text(encoding="utf-8"))
    return head.get("threshold") is not None and bool(head.get("calibration"))


def prepare_gate(
    arm: RoutedArm, seed: int, step: int, config: Any, layout: Any, run_cli: Callable[..., float]
) -> tuple[Path, dict[str, float]]:
    """The calibrated gate folder of a routed arm at one checkpoint (made once; reused by arms that share it).

    A fitted gate: `fit-gate` on the checkpoint's own states (safety-split labels), its threshold calibrated on the
    labeled dev split in the same command. A trained head: `calibrate-gate` on the dev split, written to the gate
    folder (the checkpoint's own head config is left as the training run wrote it). Either way the held-out files are
    passed as `--evaluation_datasets`, so a calibration set sharing a prompt with them is refused."""
    owner = ROUTED_ARMS[gate_owner(arm.key)]
    gate = layout.gate_dir(owner.key, seed, step)
    timings: dict[str, float] = {}
    if _calibrated(gate):
        return gate, timings
    calibration = [
        "--target_rate", str(config.gate_target),
        "--label_column", config.gate_label_column,
        "--evaluation_datasets", *map(str, layout.eval_files(config.eval_name)),
        "--dtype", "float32",
    ]  # fmt: skip
    if owner.gate == "fit":
        argv = [
            "fit-gate",
            *layout.model_args(owner.base, seed, step),
            "--dataset_name", str(layout.labels / "sft"),
            "--calibration_dataset", str(layout.labels / "dev"),
            "--output_dir", str(gate),
            *calibration,
        ]  # fmt: skip
        timings["fit_gate"] = run_cli(argv, config, layout.commands)
    else:  # the head the base arm trained beside its checkpoint
        source = layout.checkpoint(owner.base, seed, step)
        if not (source / HEAD_FILES[0]).is_file():
            raise FileNotFoundError(
                f"Arm {owner.key!r} routes with the head arm {owner.base!r} trained, but {source} has no "
                f"{HEAD_FILES[0]}: was it trained with a PreSafety head (weight > 0 or a detached head)?"
            )
        argv = [
            "calibrate-gate",
            "--head_path", str(source),
            "--dataset_name", str(layout.labels / "dev"),
            "--output_dir", str(gate),
            *calibration,
        ]  # fmt: skip
        timings["calibrate_gate"] = run_cli(argv, config, layout.commands)
    return gate, timings


def route_argv(arm: RoutedArm, gate: Path) -> list[str]:
    argv = ["--route", arm.policy, "--route_gate", str(gate)]
    if arm.policy == "primer" and arm.primer:
        argv += ["--route_primer", arm.primer]
    return argv


def gate_summary(gate: Path) -> dict[str, Any]:
    """The threshold a gate routes at and its calibration on dev (from its head config), for the results."""
    head = json.loads((gate / "safety_head_config.json").read_text(encoding="utf-8"))
    calibration = {k: v for k, v in (head.get("calibration") or {}).items() if k != "prompt_hashes"}
    return {"gate": str(gate), "threshold": head.get("threshold"), "calibration": calibration}


def run_routed_arm(
    arm: RoutedArm,
    seed: int,
    config: Any,
    layout: Any,
    run_cli: Callable[..., float],
    eval_argv: Callable[..., list[str]],
) -> dict[str, Any]:
    """Gate (fit or copy, calibrate on dev) and routed evaluation of one routed arm and seed at its steps."""
    timings: dict[str, float] = {}
    for step in arm_steps(arm.key, config):
        out = layout.eval_dir(arm.key, seed, step, config.eval_name)
        if (out / "report.json").is_file() and (out / "gate.json").is_file():
            continue
        gate, gate_timings = prepare_gate(arm, seed, step, config, layout, run_cli)
        timings.update({f"{k}_step{step}": v for k, v in gate_timings.items()})
        primary = step in (0, config.primary_step)
        argv = eval_argv(arm.key, seed, step, primary, config, layout)
        if primary and not config.greedy_only:  # routing acts on the thinking-on path: thinking off is the base's
            argv += ["--thinking_modes", "on"]
        argv += route_argv(arm, gate)
        if not (out / "report.json").is_file():
            timings[f"eval_step{step}"] = run_cli(argv, config, layout.commands)
        (out / "gate.json").write_text(json.dumps(gate_summary(gate), indent=2) + "\n", encoding="utf-8")
    return {"arm": arm.key, "seed": seed, "seconds": timings}
