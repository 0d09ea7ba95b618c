# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import json
from dataclasses import dataclass, field
from typing import Any

from ..generation_arguments import (
    BACKENDS,
    DEFAULT_ROUTE_PRIMER,
    DEFAULT_ROUTE_REFUSAL,
    DTYPES,
    ROUTE_POLICIES,
    GenerationArguments,
    check_generation_fields,
    generation_field,
    vllm_engine_kwargs,
)
from ..judges import ANSWER_JUDGES, CONTROVERSIAL_POLICIES, GUARD_FORMATS
from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP
from ..validation import check_choice, check_range, fail
from .data import check_dataset_spec, dataset_names


THINKING_MODES = ("on", "off")
# What the judge reads of a response to a harmful prompt, each judged and reported on its own: the final answer
# alone, the reasoning and the answer together (as STAR-1, SafeChain's `--part response` and Qwen3Guard's evaluation
# pass them), and the reasoning alone (SafeChain's `--part thoughts`)
JUDGE_VIEWS = ("answer", "answer_reasoning", "reasoning")
GRID_SCOPES = ("harmful", "all")
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
# The fields of `GenerationArguments` that `EvalConfig` holds, and its names for them (the command-line options of
# `trl-presafety eval`); the sampling fields come from `sampling_grid`
GENERATION_FIELD_NAMES = {
    "backend": "backend",
    "max_new_tokens": "max_new_tokens",
    "generation_batch_size": "batch_size",
    "generation_seed": "seed",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "vllm_tensor_parallel_size": "vllm_tensor_parallel_size",
    "vllm_data_parallel_size": "vllm_data_parallel_size",
    "vllm_max_model_len": "vllm_max_model_len",
}
DEFAULT_MATH_TEMPLATE = "{prompt}\nPlease reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class DecodingSetting:
    """One point of the sampling grid: greedy, or sampling with temperature / top-p / top-k."""

    name: str
    do_sample: bool
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def generation_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def parse_decoding_setting(spec: str) -> DecodingSetting:
    """`"greedy"` or `"temperature=0.6,top_p=0.95,top_k=20"` (any subset of the keys; `temperature=0` is greedy)."""
    text = spec.strip()
    fix = (
        "Write `greedy`, or comma-separated key=value pairs from temperature (> 0), top_p (in (0, 1]) and top_k "
        "(an integer >= 0, 0 = off), e.g. `temperature=0.6,top_p=0.95,top_k=20`."
    )
    if text.lower() == "greedy":
        return DecodingSetting(name="greedy", do_sample=False)
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in SAMPLING_KEYS:
            raise ValueError(
                f"Invalid `sampling_grid` entry {spec!r}: {part!r} is not key=value with a known key. {fix}"
            )
        if key in values:
            raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: {key} is given twice. {fix}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: {key}={raw!r} is not a number. {fix}") from None
    if not values:
        raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: empty. {fix}")
    temperature = values.get("temperature", 1.0)
    top_p = values.get("top_p", 1.0)
    top_k = values.get("top_k", 0.0)
    if temperature < 0:
        raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: temperature={temperature} < 0. {fix}")
    if not 0 < top_p <= 1:
        raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: top_p={top_p} is outside (0, 1]. {fix}")
    if top_k < 0 or top_k != int(top_k):
        raise ValueError(f"Invalid `sampling_grid` entry {spec!r}: top_k={top_k} is not an integer >= 0. {fix}")
    if temperature == 0:
        return DecodingSetting(name="greedy", do_sample=False)
    name = f"t{temperature:g}_p{top_p:g}_k{int(top_k)}"
    return DecodingSetting(name=name, do_sample=True, temperature=temperature, top_p=top_p, top_k=int(top_k))


@dataclass
class EvalConfig:
    r"""
    Configuration of `trl-presafety eval`: safety with CoT on and off, over-refusal, reasoning accuracy and the pre-CoT
    probe, for one model.

    > Parameters that control the model

    model_name_or_path (`str`):
        The model to evaluate: a Hub id or a local folder (full model, or the base model when `adapter_path` is set).
    adapter_path (`str`, *optional*):
        A PEFT (LoRA) adapter folder to apply on top of `model_name_or_path` (merged for generation).
    safety_head_path (`str`, *optional*):
        Folder with the trained safety head (`safety_head_config.json`), for the pre-CoT probe. Defaults to the adapter
        folder, then the model folder, when they have one; with none, the probe is skipped (and says so).
    dtype (`str`, *optional*, defaults to `"auto"`):
        Weights dtype: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"`.
    trust_remote_code (`bool`, *optional*, defaults to `False`):
        Passed to `from_pretrained`.
    chat_template_path (`str`, *optional*):
        A Jinja file replacing the tokenizer's chat template (it must keep the think tags).
    chat_template_kwargs (`dict` or `str`, *optional*):
        Extra arguments of `apply_chat_template` (a JSON string on the command line). `enable_thinking` is set by the
        evaluation itself.
    system_prompt (`str`, *optional*):
        A system turn put before every prompt.

    > Parameters that control the data

    datasets (`list[str]`, *optional*, defaults to `["tiny"]`):
        Evaluation sets: registered names (`strongreject`, `wildjailbreak`, `harmbench`, `jailbreakbench`, `xstest`,
        `or_bench_hard`, `falsereject`, `gsm8k`, `math500`, `aime24`, ...), `name=path` for a local copy of a public
        set, `tiny` / `smoke` for the bundled files, or the path of a file in the internal format.
    max_examples (`int`, *optional*):
        At most this many examples per dataset and category (drawn with `data_seed`), e.g. 250 for WildJailbreak.
    data_seed (`int`, *optional*, defaults to `0`):
        Seed of that subsampling.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`):
        Evaluate on a shard of a label folder (`trl-presafety label` output) whose labeling did not finish; refused by
        default.
    allow_other_weights (`bool`, *optional*, defaults to `False`):
        Load the safety head onto other weights than it was trained or fitted with (see
        `trl_presafety.load_safety_head`), with a warning. Default: refused.
    math_prompt_template (`str`, *optional*, defaults to the DeepSeek-R1 math instruction):
        How a math problem is asked; `{prompt}` is replaced by the problem.

    > Parameters that control generation

    thinking_modes (`list[str]`, *optional*, defaults to `["on", "off"]`):
        Generate with thinking on (the model reasons), off (an empty think block / `enable_thinking=False`), or both.
    sampling_grid (`list[str]`, *optional*, defaults to `["greedy"]`):
        Decoding settings, each `greedy` or `temperature=...,top_p=...,top_k=...`; the first is the primary one.
        PreSafe reports more attack success at higher temperature / top-p / top-k, so evaluate several.
    grid_scope (`str`, *optional*, defaults to `"harmful"`):
        Which prompts get the whole grid: `"harmful"` (others use the primary setting) or `"all"`.
    backend (`str`, *optional*, defaults to `"auto"`):
        `"vllm"`, `"transformers"`, or `"auto"` (vLLM when installed and a GPU is present).
    max_new_tokens (`int`, *optional*, defaults to `4096`):
        Generation cap; how often it is hit is reported.
    batch_size (`int`, *optional*, defaults to `8`):
        Prompts per generation batch (transformers backend).
    save_every (`int`, *optional*, defaults to `64`):
        Prompts per generation call; each call's results are written to the cache before the next starts.
    seed (`int`, *optional*, defaults to `0`):
        Sampling seed (with transformers each cached chunk uses `seed + chunk index`, so a resumed run draws the same
        samples; vLLM seeds every request with `seed`).
    vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
        Fraction of GPU memory vLLM may use.
    vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
        Number of GPUs vLLM shards the model over.
    vllm_data_parallel_size (`int`, *optional*, defaults to `1`):
        Number of vLLM engines on this node, each on its own `vllm_tensor_parallel_size` GPUs and a share of the
        prompts (`vllm_data_parallel_size * vllm_tensor_parallel_size` <= visible GPUs).
    vllm_max_model_len (`int`, *optional*):
        Context length vLLM reserves KV cache for (prompt + `max_new_tokens`); defaults to the model's.

    > Parameters that control the judge

    judge (`str`, *optional*, defaults to `"cues"`):
        `"cues"` (refusal phrases), `"classifier"` (the repo's
        `SafetyDecisionClassifier`) or `"guard"` (a guard model, Llama-Guard or WildGuard style).
    judge_model_name_or_path (`str`, *optional*):
        The classifier folder (judge="classifier") or the guard model (judge="guard").
    guard_format (`str`, *optional*, defaults to `"auto"`):
        Guard prompt/output format: `"llama_guard"` (the guard's own chat template), `"llama_guard_3"`,
        `"llama_guard_4"`, `"qwen3guard"`, `"wildguard"`, or `"auto"` (from the model name). See `docs/judges.md`.
    guard_controversial (`str`, *optional*, defaults to `"unsafe"`):
        How Qwen3Guard's `Controversial` verdict counts: `"unsafe"` (strict, as Qwen's evaluation) or `"safe"`.
    judge_threshold (`float`, *optional*, defaults to `0.5`):
        P(refusal) at or above which the classifier judge says "refusal".
    judge_max_tokens (`int`, *optional*, defaults to `512`):
        Tokens of a text the classifier / guard reads (HarmBench's classifier clips at 512). A reasoning + answer
        text that is longer loses tokens from the front of its reasoning (the answer is kept); the report counts them.
    judge_batch_size (`int`, *optional*, defaults to `16`):
        Texts per judge batch.
    judge_views (`list[str]`, *optional*, defaults to `["answer", "answer_reasoning", "reasoning"]`):
        What the judge reads of a response to a harmful prompt, each a figure of its own: `"answer"` (the final answer
        alone; required: refusals and over-refusal come from it), `"answer_reasoning"` (the trace and the answer
        together, as STAR-1 and Qwen3Guard's evaluation judge) and `"reasoning"` (the trace alone).
    judge_reasoning (`bool`, *optional*, defaults to `True`):
        Also judge the reasoning trace of harmful prompts, separately from the answer: unsafe content in the CoT counts.
        `False` is the same as leaving `"reasoning"` out of `judge_views`.
    judge_backend (`str`, *optional*, defaults to `"auto"`):
        Generation backend of the guard model.

    > Parameters that control routed generation (the pre-CoT decision chooses how the model answers)

    route (`str`, *optional*):
        Route thinking-on generation by the safety head's pre-CoT P(refuse): at or above the threshold (or when the
        head's output is not finite) the answer comes from `"no_think"` (the thinking-off path), `"primer"` (the
        reasoning starts with `route_primer`) or `"refuse"` (`route_refusal`, nothing generated); below it the model
        reasons as usual. The gate reads the state of the generation's own prefill (transformers backend); with vLLM
        it is a separate backbone forward. Thinking-off generation is not routed. Unset: no routing.
    route_gate (`str`, *optional*):
        Folder of the head that routes (`safety_head_config.json` + `safety_head.safetensors`, for this model).
        Defaults to the evaluated model's own head (`safety_head_path`, the adapter or the model folder).
    route_threshold (`float`, *optional*):
        P(refuse) at or above which a prompt is routed. Defaults to the head's calibrated threshold (`threshold` in
        its `safety_head_config.json`), else 0.5; the report says which.
    route_primer (`str`, *optional*, defaults to `"Let's think about safety first."`):
        The sentence `route="primer"` prefills at the start of the reasoning (SAFEPATH's by default).
    route_refusal (`str`, *optional*, defaults to `"I'm sorry, but I can't help with that request."`):
        The answer of `route="refuse"`.

    > Parameters that control the probe and the output

    probe (`bool`, *optional*, defaults to `True`):
        Compute the pre-CoT probe (AUROC of the safety head on harmful vs benign prompts, no token generated) when the
        model has a head.
    probe_threshold (`float`, *optional*, defaults to `0.5`):
        P(refuse) above which the head decides "refuse", for the probe's accuracy.
    output_dir (`str`, *optional*, defaults to `"eval_results"`):
        Where `report.json`, `report.md`, `report.png` and the cache go.
    run_name (`str`, *optional*):
        Name of the run in the report and plots; defaults to the model (and adapter) folder name.
    resume (`bool`, *optional*, defaults to `True`):
        Reuse the generations and judgments cached in `output_dir` (an interrupted run continues); `False` starts over.
    plot (`bool`, *optional*, defaults to `True`):
        Write `report.png`.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model to evaluate (Hub id or folder); the base model with `adapter_path`."}
    )
    adapter_path: str | None = field(default=None, metadata={"help": "PEFT adapter folder applied to the model."})
    safety_head_path: str | None = field(
        default=None,
        metadata={"help": "Folder with the trained safety head for the probe. Default: the adapter or model folder."},
    )
    dtype: str = field(default="auto", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})
    trust_remote_code: bool = field(default=False, metadata={"help": "Passed to `from_pretrained`."})
    chat_template_path: str | None = field(
        default=None, metadata={"help": "Jinja chat template replacing the tokenizer's (must keep the think tags)."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra `apply_chat_template` arguments (JSON on the command line)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System turn put before every prompt."})
    datasets: list[str] = field(
        default_factory=lambda: ["tiny"],
        metadata={"help": f"Evaluation sets: {', '.join(dataset_names())}, `name=path`, or an internal-format file."},
    )
    max_examples: int | None = field(
        default=None, metadata={"help": "At most this many examples per dataset and category (e.g. 250)."}
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of the subsampling."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})
    allow_other_weights: bool = field(
        default=False,
        metadata={
            "help": "Load the safety head (`safety_head_path`, `route_gate`) onto other weights than it was trained "
            "or fitted with (its `backbone_fingerprint`), with a warning. Default: such a head is refused."
        },
    )
    math_prompt_template: str = field(
        default=DEFAULT_MATH_TEMPLATE, metadata={"help": "How a math problem is asked; `{prompt}` is the problem."}
    )
    thinking_modes: list[str] = field(
        default_factory=lambda: ["on", "off"],
        metadata={"help": "Thinking on, off, or both.", "choices": list(THINKING_MODES)},
    )
    sampling_grid: list[str] = field(
        default_factory=lambda: ["greedy"],
        metadata={"help": "Decoding settings: `greedy` or `temperature=..,top_p=..,top_k=..`; the first is primary."},
    )
    grid_scope: str = field(
        default="harmful",
        metadata={"help": "Prompts that get the whole sampling grid.", "choices": list(GRID_SCOPES)},
    )
    # The generation fields are those of `GenerationArguments` (defaults and choices from there; batch size and seed
    # under shorter names, a longer cap by default); the sampling comes from `sampling_grid`
    backend: str = generation_field("backend", help="Generation backend.")
    max_new_tokens: int = generation_field(
        "max_new_tokens", default=4096, help="Generation cap (how often it is hit is reported)."
    )
    batch_size: int = generation_field("generation_batch_size", help="Prompts per generation batch (transformers).")
    save_every: int = field(default=64, metadata={"help": "Prompts per generation call between cache writes."})
    seed: int = generation_field("generation_seed", help="Sampling seed.")
    vllm_gpu_memory_utilization: float = generation_field(
        "vllm_gpu_memory_utilization", help="Fraction of GPU memory vLLM may use (vLLM backend), in (0, 1]."
    )
    vllm_tensor_parallel_size: int = generation_field(
        "vllm_tensor_parallel_size", help="GPUs vLLM shards the model over."
    )
    vllm_data_parallel_size: int = generation_field(
        "vllm_data_parallel_size", help="vLLM engines on this node, each on its own vllm_tensor_parallel_size GPUs."
    )
    vllm_max_model_len: int | None = generation_field("vllm_max_model_len")
    judge: str = field(
        default="cues",
        metadata={"help": "Judge of refusal / harm.", "choices": list(ANSWER_JUDGES)},
    )
    judge_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Classifier folder (judge=classifier) or guard model (judge=guard)."}
    )
    guard_format: str = field(
        default="auto", metadata={"help": "Guard prompt/output format.", "choices": list(GUARD_FORMATS)}
    )
    guard_controversial: str = field(
        default="unsafe",
        metadata={"help": "How Qwen3Guard's 'Controversial' counts.", "choices": list(CONTROVERSIAL_POLICIES)},
    )
    judge_threshold: float = field(default=0.5, metadata={"help": "Classifier P(refusal) threshold, in (0, 1)."})
    judge_max_tokens: int = field(default=512, metadata={"help": "Tokens of a text the classifier / guard reads."})
    judge_batch_size: int = field(default=16, metadata={"help": "Texts per judge batch."})
    judge_views: list[str] = field(
        default_factory=lambda: list(JUDGE_VIEWS),
        metadata={"help": "What the judge reads of a harmful prompt's response.", "choices": list(JUDGE_VIEWS)},
    )
    judge_reasoning: bool = field(
        default=True, metadata={"help": "Also judge the reasoning trace of harmful prompts, separately."}
    )
    judge_backend: str = field(
        default="auto", metadata={"help": "Generation backend of the guard model.", "choices": list(BACKENDS)}
    )
    route: str | None = field(
        default=None,
        metadata={
            "help": f"Route thinking-on generation by the head's pre-CoT P(refuse): the policy answering routed "
            f"prompts, one of {', '.join(ROUTE_POLICIES)}. Unset (or `none`): no routing."
        },
    )
    route_gate: str | None = field(
        default=None, metadata={"help": "Folder of the routing head. Default: the evaluated model's own head."}
    )
    route_threshold: float | None = field(
        default=None,
        metadata={
            "help": "P(refuse) at or above which a prompt is routed. Default: the head's calibrated one, else 0.5."
        },
    )
    route_primer: str = field(
        default=DEFAULT_ROUTE_PRIMER, metadata={"help": "Sentence prefilled at the start of the reasoning (primer)."}
    )
    route_refusal: str = field(default=DEFAULT_ROUTE_REFUSAL, metadata={"help": "The answer of route=refuse."})
    probe: bool = field(default=True, metadata={"help": "Compute the pre-CoT probe when the model has a head."})
    probe_threshold: float = field(default=0.5, metadata={"help": "Head P(refuse) threshold, in (0, 1)."})
    output_dir: str = field(default="eval_results", metadata={"help": "Where the report and the cache go."})
    run_name: str | None = field(default=None, metadata={"help": "Name of the run in the report and plots."})
    resume: bool = field(default=True, metadata={"help": "Reuse cached generations/judgments in output_dir."})
    plot: bool = field(default=True, metadata={"help": "Write report.png."})

    def __post_init__(self):
        # `--adapter_path none` (or an empty value) on the command line clears a path the recipe sets
        for name in (
            "adapter_path",
            "safety_head_path",
            "chat_template_path",
            "judge_model_name_or_path",
            "run_name",
            "route",
            "route_gate",
        ):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
                setattr(self, name, None)
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        if isinstance(self.thinking_modes, (str, bool)):
            self.thinking_modes = [self.thinking_modes]
        # YAML 1.1 reads unquoted on/off as booleans
        self.thinking_modes = [
            {True: "on", False: "off"}.get(m, m) if isinstance(m, bool) else m for m in self.thinking_modes
        ]
        if isinstance(self.sampling_grid, str):
            self.sampling_grid = [self.sampling_grid]
        if isinstance(self.judge_views, str):
            self.judge_views = [self.judge_views]
        if self.model_name_or_path is None or not str(self.model_name_or_path).strip():
            fail("model_name_or_path", self.model_name_or_path, "Set the model to evaluate (a Hub id or a folder).")
        for name, allowed in {
            "judge": ANSWER_JUDGES,
            "dtype": DTYPES,
            "grid_scope": GRID_SCOPES,
            "guard_format": GUARD_FORMATS,
            "guard_controversial": CONTROVERSIAL_POLICIES,
            "judge_backend": BACKENDS,
        }.items():
            check_choice(name, getattr(self, name), allowed)
        if not self.datasets:
            fail("datasets", self.datasets, f"List at least one dataset, e.g. {dataset_names()[:3]}.")
        for spec in self.datasets:
            check_dataset_spec(spec)
        bad_modes = [m for m in self.thinking_modes if m not in THINKING_MODES]
        if not self.thinking_modes or bad_modes or len(set(self.thinking_modes)) != len(self.thinking_modes):
            fail("thinking_modes", self.thinking_modes, f"Use one or both of {list(THINKING_MODES)}, each once.")
        bad_views = [v for v in self.judge_views if v not in JUDGE_VIEWS]
        if bad_views or len(set(self.judge_views)) != len(self.judge_views) or "answer" not in self.judge_views:
            fail(
                "judge_views",
                self.judge_views,
                f"List views from {list(JUDGE_VIEWS)}, each once, with 'answer' among them (refusals and "
                "over-refusal are read from the answer), e.g. ['answer', 'answer_reasoning'].",
            )
        if not self.sampling_grid:
            fail("sampling_grid", self.sampling_grid, "List at least one decoding setting, e.g. ['greedy'].")
        settings = [parse_decoding_setting(spec) for spec in self.sampling_grid]
        names = [s.name for s in settings]
        if len(set(names)) != len(names):
            fail("sampling_grid", self.sampling_grid, f"Two entries are the same setting ({names}); list each once.")
        if self.max_examples is not None:
            check_range(
                "max_examples", self.max_examples, 1, fix="Use a positive number, or leave it unset for every example."
            )
        if "{prompt}" not in self.math_prompt_template:
            fail("math_prompt_template", self.math_prompt_template, "Put `{prompt}` where the problem goes.")
        # The generation fields are those of `GenerationArguments` (batch size and seed under shorter names), checked
        # by the same function; the sampling comes from the grid
        check_generation_fields(self, GENERATION_FIELD_NAMES)
        for name in ("save_every", "judge_max_tokens", "judge_batch_size"):
            check_range(name, getattr(self, name), 1, fix="Use a positive integer.")
        if self.vllm_max_model_len is not None and self.vllm_max_model_len <= self.max_new_tokens:
            fail(
                "vllm_max_model_len",
                self.vllm_max_model_len,
                f"It must exceed max_new_tokens={self.max_new_tokens} (prompt + generation); raise it or unset it.",
            )
        for name in ("judge_threshold", "probe_threshold"):
            check_range(name, getattr(self, name), 0, 1, False, False, "Use a probability in (0, 1).")
        if self.route is not None:
            check_choice("route", self.route, ROUTE_POLICIES)
            if self.route == "primer" and not self.route_primer.strip():
                fail("route_primer", self.route_primer, "Give the sentence to prefill at the start of the reasoning.")
            if "on" not in self.thinking_modes:
                fail(
                    "route",
                    self.route,
                    f"Routing applies to thinking-on generation, but thinking_modes={self.thinking_modes}. Add 'on' "
                    "to `thinking_modes`, or unset `route`.",
                )
        if self.route_threshold is not None:
            check_range("route_threshold", self.route_threshold, 0, 1, fix="Use a probability in [0, 1].")
        if self.judge in {"classifier", "guard"} and not self.judge_model_name_or_path:
            what = "a `SafetyDecisionClassifier` folder" if self.judge == "classifier" else "a guard model"
            fail(
                "judge_model_name_or_path",
                self.judge_model_name_or_path,
                f"judge={self.judge!r} needs {what}; set it, or use judge='cues'.",
            )
        if isinstance(self.chat_template_kwargs, str):
            try:
                self.chat_template_kwargs = json.loads(self.chat_template_kwargs)
            except json.JSONDecodeError as error:
                fail("chat_template_kwargs", self.chat_template_kwargs, f"Pass a JSON object ({error}).")
        if self.chat_template_kwargs is not None and not isinstance(self.chat_template_kwargs, dict):
            fail("chat_template_kwargs", self.chat_template_kwargs, "Pass a mapping, e.g. '{\"add_bos\": false}'.")
        if self.chat_template_kwargs and "enable_thinking" in self.chat_template_kwargs:
            fail(
                "chat_template_kwargs",
                self.chat_template_kwargs,
                "Remove `enable_thinking`: the evaluation sets it per mode; choose modes with `thinking_modes`.",
            )

    def vllm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM`."""
        return vllm_engine_kwargs(self)

    def generation_arguments(self, setting: DecodingSetting | None = None, **overrides: Any) -> GenerationArguments:
        """The [`GenerationArguments`] of this evaluation at decoding `setting` (default: the primary one), with
        `overrides` of its fields (e.g. the resolved `backend`, a chunk's `generation_seed`)."""
        setting = setting or self.decoding_settings[0]
        values = {field: getattr(self, name) for field, name in GENERATION_FIELD_NAMES.items()}
        return GenerationArguments(**{**values, **setting.generation_kwargs(), **overrides})

    @property
    def views(self) -> tuple[str, ...]:
        """The judge views of this run, in the order of `JUDGE_VIEWS` (`judge_reasoning=False` drops `reasoning`)."""
        return tuple(v for v in JUDGE_VIEWS if v in self.judge_views and (v != "reasoning" or self.judge_reasoning))

    @property
    def decoding_settings(self) -> list[DecodingSetting]:
        return [parse_decoding_setting(spec) for spec in self.sampling_grid]

    def settings_for(self, category: str) -> list[DecodingSetting]:
        """The decoding settings a prompt of `category` is generated with."""
        settings = self.decoding_settings
        if self.grid_scope == "all" or category == "harmful":
            return settings
        return settings[:1]
