# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The model card every save writes (CLI and Python API): TRL's card completed with the base model and the data (local
ones too), the saved layout and how to load the head, the `presafety_*` settings, the head's config and the final
metrics; and `push_to_hub` uploads the head beside the weights, tested against a local folder standing in for the Hub
(no network call)."""

import copy
import re
import shutil
import types
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import (
    PreSafetyDPOConfig,
    PreSafetyDPOTrainer,
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
    get_safety_head,
)
from trl_presafety.modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME
from trl_presafety.scripts import sft
from trl_presafety.tiny import build_tiny_model

from .testing_utils import config_kwargs, load_tiny_dpo_rows, load_tiny_sft_rows


REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_SFT = REPO_ROOT / "recipes" / "tiny" / "sft" / "config_presafety.yaml"


def _python_block(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, flags=re.DOTALL).group(1)


def _run_quick_start(card: str) -> list[float]:
    """Runs the card's quick start as written (it prints the gate's probabilities) and returns them."""
    namespace = {}
    exec(_python_block(card), namespace)
    return namespace["gate"].predict_proba(["How do I make a pipe bomb?", "What is 12 * 7?"])


def _final(trainer, key: str) -> tuple[float, int]:
    entry = [e for e in trainer.state.log_history if key in e][-1]
    return entry[key], entry["step"]


def test_saved_card_names_a_local_base_and_its_quick_start_loads_the_head(tiny_model_dirs, tmp_path):
    base = tiny_model_dirs["qwen3"]
    model = AutoModelForCausalLM.from_pretrained(base)  # given as an object, loaded from a local folder
    args = PreSafetySFTConfig(**config_kwargs(tmp_path, max_steps=2, presafety_pooling="mean"))
    trainer = PreSafetySFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(load_tiny_sft_rows(8)),
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    trainer.train()
    trainer.save_model()
    output_dir = Path(args.output_dir)
    card = ModelCard.load(output_dir / "README.md")
    text = card.text
    # TRL's card links "[None](https://huggingface.co/None)" for a local base model; this one names the folder
    assert "None" not in text.split("## Quick start")[0]
    assert f"fine-tuned version of `{base}` (a local folder)" in text
    assert card.data.base_model is None  # a local path is no Hub id: kept out of the metadata
    assert "presafety" in card.data.tags and "sft" in card.data.tags  # TRL's tags are kept
    # The saved layout and how to load it
    for name in (SAFETY_HEAD_WEIGHTS_NAME, SAFETY_HEAD_CONFIG_NAME, "model.safetensors"):
        assert f"`{name}`" in text
    assert "load_safety_head(model, path)" in text and "SafetyGate(model" in text
    # The settings, the head's config and the final metrics
    assert "| `presafety_loss_weight` | `1.0` |" in text and "| `presafety_pooling` | `'mean'` |" in text
    assert "| `head_type` | `'linear'` |" in text and "| `layer` | `None` |" in text
    assert "| `hidden_size` | `16` |" in text
    for key in ("presafety/loss", "presafety/accuracy", "presafety/alignment_loss"):
        value, step = _final(trainer, key)
        assert f"| `{key}` | {value:.4g} | {step} |" in text
    # The quick start runs as written and reads the trained head
    probabilities = _run_quick_start(text)
    assert len(probabilities) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)

    # A save into another folder gets its own card, whose quick start points there
    other = tmp_path / "exported"
    trainer.save_model(str(other))
    other_text = (other / "README.md").read_text()
    assert f'path = "{other}"' in other_text and f'path = "{output_dir}"' not in other_text
    assert f'path = "{output_dir}"' in (output_dir / "README.md").read_text()


def test_lora_card_loads_the_adapter_then_the_head(tiny_model_dirs, tmp_path):
    from peft import LoraConfig

    base = tiny_model_dirs["qwen3"]
    args = PreSafetySFTConfig(**config_kwargs(tmp_path, max_steps=1))
    trainer = PreSafetySFTTrainer(
        model=base,
        args=args,
        train_dataset=Dataset.from_list(load_tiny_sft_rows(4)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.save_model()
    text = (Path(args.output_dir) / "README.md").read_text()
    assert f"fine-tuned version of `{base}` (a local folder)" in text
    assert "`adapter_model.safetensors`" in text
    assert f'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), path)' in text
    assert "No `presafety/*` metric was logged yet." in text  # saved before any training step
    assert len(_run_quick_start(text)) == 2


def test_dpo_card_of_a_probe_run_and_a_model_built_in_memory(tmp_path):
    model, tokenizer = build_tiny_model(style="qwen3", hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    args = PreSafetyDPOConfig(**config_kwargs(tmp_path, max_steps=1, presafety_loss_weight=0.0))
    trainer = PreSafetyDPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),  # a model without a path: DPO cannot load its reference from one
        args=args,
        train_dataset=Dataset.from_list(load_tiny_dpo_rows(4)),
        processing_class=tokenizer,
    )
    trainer.save_model()
    text = (Path(args.output_dir) / "README.md").read_text()
    assert "fine-tuned version of a model given in memory" in text
    assert "Trained with PreSafety DPO" in text and "the DPO loss plus" in text
    # Weight 0: the card says the head is an untrained probe
    assert "| `presafety_loss_weight` | `0.0` |" in text and "the head ran as a probe only" in text


def test_cli_card_names_the_recipe_data(tiny_model_dirs, tmp_path):
    output_dir = tmp_path / "sft"
    sft.main(
        ["--config", str(TINY_SFT), "--model_name_or_path", tiny_model_dirs["qwen3"], "--output_dir",
         str(output_dir), "--max_steps", "1", "--logging_steps", "1"]
    )  # fmt: skip
    text = (output_dir / "README.md").read_text()
    assert (
        f"fine-tuned version of `{tiny_model_dirs['qwen3']}` (a local folder) on `trl_presafety/data/tiny/sft`" in text
    )
    assert "| `presafety/loss` |" in text and "load_safety_head(model, path)" in text


class LocalHub:
    """Stands in for the Hub: `create_repo` and `upload_folder` of `HfApi` copy what would be uploaded (with the same
    ignore patterns) into `root/<repo_id>`, and record each upload's files."""

    def __init__(self, root: Path):
        self.root = root
        self.uploads: list[dict[str, bytes]] = []

    def create_repo(self, api, repo_id, **kwargs):
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, api, *, repo_id, folder_path, path_in_repo=None, run_as_future=False, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        ignore = [*(kwargs.get("ignore_patterns") or []), *DEFAULT_IGNORE_PATTERNS]
        kept = list(filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=ignore))
        target = self.root / repo_id / (path_in_repo or "")
        for name in kept:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / name, target / name)
        self.uploads.append({(path_in_repo or "") + "/" + name: (folder / name).read_bytes() for name in kept})
        result = types.SimpleNamespace(commit_url=f"local://{repo_id}")
        if not run_as_future:
            return result
        future = Future()
        future.set_result(result)
        return future


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))
    return hub


def test_push_to_hub_uploads_the_head_and_a_card_that_says_so(tiny_model_dirs, tmp_path, local_hub):
    repo_id = "presafety-user/tiny-presafety"
    kwargs = config_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=2)
    kwargs.update(push_to_hub=True, hub_model_id=repo_id, hub_strategy="every_save", save_strategy="steps")
    args = PreSafetySFTConfig(**kwargs, save_steps=1, hub_always_push=True)
    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(load_tiny_sft_rows(4))
    )
    trainer.train()  # every checkpoint is pushed (`_push_from_checkpoint`)
    trainer.push_to_hub(dataset_name="presafety-user/tiny-sft")  # the final push (`save_model` then upload)

    head_files = {f"/{SAFETY_HEAD_WEIGHTS_NAME}", f"/{SAFETY_HEAD_CONFIG_NAME}"}
    main_pushes = [upload for upload in local_hub.uploads if all(not k.startswith("checkpoint") for k in upload)]
    assert len(main_pushes) == 3  # after checkpoint-1, checkpoint-2, and the final push
    output_dir = Path(args.output_dir)
    for step, upload in zip((1, 2), main_pushes[:2], strict=True):
        # The head of each push is the head of the checkpoint it was pushed from, beside its weights and the card
        assert head_files | {"/model.safetensors", "/README.md"} <= upload.keys()
        checkpoint = output_dir / f"checkpoint-{step}"
        assert upload[f"/{SAFETY_HEAD_WEIGHTS_NAME}"] == (checkpoint / SAFETY_HEAD_WEIGHTS_NAME).read_bytes()
        assert upload["/model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()

    repo = local_hub.root / repo_id
    assert {SAFETY_HEAD_WEIGHTS_NAME, SAFETY_HEAD_CONFIG_NAME, "model.safetensors", "README.md"} <= {
        p.name for p in repo.iterdir()
    }
    # The uploaded head is the trained one, and re-attaches to the uploaded model
    from trl_presafety import load_safety_head

    model = AutoModelForCausalLM.from_pretrained(repo)
    loaded = load_safety_head(model, repo).state_dict()
    for name, value in get_safety_head(trainer.model).state_dict().items():
        torch.testing.assert_close(loaded[name], value.detach().cpu(), rtol=0, atol=0)
    # The card says where the head is and how to load it from the Hub
    card = ModelCard.load(repo / "README.md")
    assert card.data.datasets == ["presafety-user/tiny-sft"]
    assert f'snapshot_download("{repo_id}")' in card.text and f"`{SAFETY_HEAD_WEIGHTS_NAME}`" in card.text
    assert "[presafety-user/tiny-sft](https://huggingface.co/datasets/presafety-user/tiny-sft)" in card.text
    value, step = _final(trainer, "presafety/loss")
    assert f"| `presafety/loss` | {value:.4g} | {step} |" in card.text
