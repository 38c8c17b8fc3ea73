# make repro     : set up .venv and run the whole pipeline (`dvc repro`) on the embedded default
# make test      : set up .venv and run lint + the whole test suite (what CI runs)
# make test-fast : lint + the tests not marked slow (unit and stage tests, every benchmark script at its
#                  tiny size): the development loop
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast repro lint
setup: $(VENV)/.installed

# torch 2.14.1 + torchvision 0.29.1 first, the pair GPU users install: Qwen2-VL's processor needs
# torchvision, and the registry's torchvision builds import only beside the CUDA build of torch
# (it runs on CPU too; see docs/models.md). The package's torch range then installs nothing more.
# DeepSpeed builds against the installed torch (no build isolation); the ZeRO tests run it on CPU.
# constraints.txt fixes every version to one known resolution (see its header).
# Without a GPU, DeepSpeed's ranks talk through a C++ shared-memory collective that it compiles the first
# time ranks start from this .venv (33 s here, kept in ~/.cache/torch_extensions; a .venv at another path
# compiles it again): compiled here, so that it is part of the setup rather than of the first ZeRO run.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet -c constraints.txt --no-build-isolation deepspeed==0.19.8
	command -v nvidia-smi >/dev/null || DS_ACCELERATOR=cpu $(PY) -c \
	    "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()" >/dev/null
	touch $@

lint: setup
	$(VENV)/bin/ruff check sena_cli sena_fixtures tests benchmarks research scripts

# Two pytest-xdist workers, one thread each (two cores; torch's default of a thread per core would make
# four). tests/conftest.py keeps each file's tests on one worker, in order, and hands out the longest first.
PYTEST_WORKERS := -n 2 --no-loadscope-reorder

test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_WORKERS)

test-fast: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" $(PYTEST_WORKERS)

repro: setup
	dvc repro
