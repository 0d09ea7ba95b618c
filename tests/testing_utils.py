# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import importlib.util
import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

require_torch_accelerator = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA accelerator")
require_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
require_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")

# CPU settings for every trainer config built in tests
CPU_TRAINING_KWARGS = {
    "bf16": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}
