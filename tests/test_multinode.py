# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Training over several machines: the packaged multi-node accelerate config and the checks of a multi-node launch.
The launch itself (two machine ranks on this host) is `tests/test_distributed.py::test_deepspeed_zero3_over_two_machines`.
"""

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

from trl_presafety import cli
from trl_presafety.scripts.arguments import resolve_accelerate_config


def test_multinode_config_parses_with_accelerates_own_loader():
    path = resolve_accelerate_config("zero3_multinode")
    assert path == resolve_accelerate_config("deepspeed_zero3_multinode")
    config = load_config_from_file(str(path))
    assert config.distributed_type == DistributedType.DEEPSPEED
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 16, 0)
    assert (config.rdzv_backend, config.same_network, config.main_process_port) == ("static", True, 29500)
    # torchrun on each machine (what `srun` starts), not DeepSpeed's pdsh launcher over ssh
    assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
    assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"] is True
    # The same ZeRO-3 settings as the one-machine config
    single = load_config_from_file(str(resolve_accelerate_config("zero3")))
    assert config.deepspeed_config == {**single.deepspeed_config, "deepspeed_multinode_launcher": "standard"}
    assert config.main_process_ip is None  # per cluster: given on the command line


def _parsed(*options: str):
    return launch_command_parser().parse_args([*options, "-m", "trl_presafety.scripts.sft"])


def test_a_multinode_launch_without_the_rank0_address_fails_clearly():
    path = resolve_accelerate_config("zero3_multinode")
    with pytest.raises(ValueError, match=r"Invalid `main_process_ip`: None with `num_machines: 2`.*--main_process_ip"):
        cli.check_machines(_parsed("--config_file", str(path)), path, environ={})
    cli.check_machines(_parsed("--main_process_ip", "10.0.0.1", "--machine_rank", "1"), path, environ={})
    # One machine: nothing to meet
    cli.check_machines(_parsed(), resolve_accelerate_config("zero3"), environ={})
    cli.check_machines(_parsed("--num_machines", "1"), path, environ={})


def test_a_slurm_node_launched_with_another_machine_rank_fails_clearly():
    path = resolve_accelerate_config("zero3_multinode")
    options = ("--main_process_ip", "10.0.0.1")
    with pytest.raises(ValueError, match=r"Invalid `machine_rank`: 0 on Slurm node 1.*--machine_rank \$SLURM_NODEID"):
        cli.check_machines(_parsed(*options), path, environ={"SLURM_NODEID": "1"})
    cli.check_machines(_parsed(*options, "--machine_rank", "1"), path, environ={"SLURM_NODEID": "1"})


def test_the_cli_checks_before_launching(monkeypatch):
    launched = []
    with pytest.raises(ValueError, match=r"Invalid `main_process_ip`"):
        cli.launch("trl_presafety.scripts.sft", "zero3_multinode", [], ["--config", "x.yaml"], launched.append)
    assert not launched
    args = cli.launch(
        "trl_presafety.scripts.sft",
        "zero3_multinode",
        ["--machine_rank", "1", "--main_process_ip", "10.0.0.1"],
        ["--config", "x.yaml"],
        launched.append,
    )
    assert len(launched) == 1 and launched[0].machine_rank == 1 and launched[0].main_process_ip == "10.0.0.1"
    assert args[:2] == ["--config_file", str(resolve_accelerate_config("zero3_multinode"))]
