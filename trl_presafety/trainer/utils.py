# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from typing import Any

from transformers import PreTrainedModel, set_seed
from trl.trainer.utils import create_model_from_path


def load_model_like_trl(model_id: str, args: Any, quantization_config: Any = None) -> PreTrainedModel:
    """Loads `model_id` exactly as TRL's SFT/DPO trainers do when given a model name.

    The PreSafety trainers load the model themselves so that the safety head can be attached before TRL wraps the
    model (PEFT, DeepSpeed); the head is trained beside the adapter and saved in its own file.
    """
    # PEFT initializes adapters randomly: TRL seeds before creating the model, so do we
    set_seed(args.seed)
    model_init_kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in model_init_kwargs:
            raise ValueError(
                "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`. "
                "Please set it in only one place, preferably as a trainer argument."
            )
        model_init_kwargs["quantization_config"] = quantization_config
    # Distributed training requires device_map=None ("auto" fails)
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        model_init_kwargs["device_map"] = None
    model_init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return create_model_from_path(model_id, **model_init_kwargs)
