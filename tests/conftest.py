# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import os

import pytest
import torch


# The tests never reach the Hub. Set once, here: pytest loads this file before any test module, so it comes before the
# first import of huggingface_hub and datasets (which read it at import), and the processes that tests start inherit it
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # GPU-only tests are skipped where there is no accelerator (CI never has one)
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA accelerator")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny random-init models saved to disk, one per chat-template family, loaded with `from_pretrained` in tests."""
    from trl_presafety.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    dirs = {}
    for style in ("qwen3", "r1"):
        path = root / style
        build_tiny_model(style=style, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, output_dir=path)
        dirs[style] = str(path)
    return dirs
