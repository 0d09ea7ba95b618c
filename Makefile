# Two commands on a fresh machine:
#   make demo   sets up .venv and runs a tiny end-to-end PreSafety SFT on CPU (model built locally, bundled data)
#   make test   sets up .venv and runs the test suite
# `make pipeline-tiny` runs the tiny model through every stage (recipes/tiny/pipeline.yaml), a few minutes on CPU.
# `make docs` builds the documentation site (docs/, mkdocs.yml) into site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: on these machines torch==2.13.0 is a CPU build on local disk, while an
# unpinned torch pulled in by another package would download a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: setup demo pipeline-tiny test slow_tests quality style docs docs-serve clean vllm_check efficacy efficacy-extended efficacy-routing

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m trl_presafety.demo

# The whole method on the tiny model, on CPU (a few minutes): build-sft -> label -> PreSafety SFT and plain SFT -> eval
# of both -> eval-compare, then the DPO path on build-sft's pairs. Rerun to resume; outputs in runs/tiny-pipeline.
pipeline-tiny: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m trl_presafety.cli pipeline --config recipes/tiny/pipeline.yaml --paths sft dpo

# Two tiers: `make test` (about 5 min on 2 CPU cores) runs every test but the `slow` ones; `make slow_tests` runs those:
# real multi-process launches (DDP, DeepSpeed, FSDP2, killed and shared label workers), the efficacy study's smoke
# runs and the shipped tiny pipeline. CI runs both. `--dist loadfile`: a module's tests run on one worker, so its
# module-scoped fixtures (the fine-tuned MiniLM, the distributed reference runs, the efficacy smoke folder) are built once.
PYTEST_ARGS := -n $(PYTEST_WORKERS) --dist loadfile --durations=15
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) -m "not gpu and not slow" tests

# The efficacy study on a model organism (benchmarks/efficacy): arms (a)-(d), 10 seeds; 11-23 min on 2 idle CPU cores,
# depending on the machine. Resumable: rerun to continue; results/efficacy_default.json, RESULTS.md and efficacy.png
# are regenerated.
efficacy: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.efficacy.study

# (e) IPO, (f) AltTrain and the ablations (weight 0.2 / 5, anchor think_end, middle layer, no gradient clipping), on
# the same organism, 5 seeds (about as long again as `make efficacy`; reuses its organism, labels and arms a-c)
efficacy-extended: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.efficacy.study --arms a b c --methods --ablations --seeds 0 1 2 3 4 \
		--tag extended

# Issue 20: the decision drives generation (gates fitted or trained + routing no_think / primer / refuse, self-routing
# SFT with and without the tied head, LoRA (b) and (c)), 10 seeds, the protocol of 2026-12-06 in RESULTS.md; reuses
# the organism, labels and arms a-c of `make efficacy` when they are in runs/efficacy (then 37 min on 2 CPU cores)
efficacy-routing: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.efficacy.study --arms a b c --routing --tag routing

slow_tests: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) -m "slow and not gpu" tests

# vLLM's own weight and LoRA loaders checked against what the trainers save, and its architecture resolution, weight
# loader and classification head against an exported gate (export-gate), on this machine's CPU: vLLM's Python code
# and its pure-Python needs go into $(VLLM_SITE), outside the venv (its GPU parts are not needed). Not part of `test`.
VLLM_SITE := .vllm-site
VLLM_PURE_DEPS := pyzmq cbor2 openai-harmony openai sniffio pybase64 cachetools msgspec uvloop prometheus-client \
	xgrammar apache-tvm-ffi fastapi starlette opentelemetry-api partial-json-parser llguidance

vllm_check: setup
	$(BIN)/python -m pip install -q --no-deps --target $(VLLM_SITE) "vllm>=0.10.0" $(VLLM_PURE_DEPS)
	PYTHONPATH=$(VLLM_SITE) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -p no:xdist tests/test_artifacts.py tests/test_gate_export.py \
		-k vllm -rs

quality: setup
	$(BIN)/ruff check trl_presafety tests benchmarks docs
	$(BIN)/ruff format --check trl_presafety tests benchmarks docs README.md

style: setup
	$(BIN)/ruff check --fix trl_presafety tests benchmarks docs
	$(BIN)/ruff format trl_presafety tests benchmarks docs README.md

# The documentation site, with warnings as errors (a broken link or anchor, a page left out of the navigation, a
# docstring naming a parameter its function lacks). NO_MKDOCS_2_WARNING silences the theme's banner about MkDocs 2.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The site served at http://127.0.0.1:8000 with a working search (a page of site/ opened from disk has none: the
# browser does not let it load the search index)
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) $(VLLM_SITE) build site *.egg-info .pytest_cache
