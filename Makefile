# make repro : set up .venv and run the whole pipeline (`dvc repro`) on the embedded default
# make test  : set up .venv and run lint + the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test repro lint
setup: $(VENV)/.installed

# torch==2.13.0 first: on this kind of machine it is a CPU wheel on disk, and the
# package's torch range then installs nothing more (see README for CUDA).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check sena_cli tests benchmarks scripts

test: lint
	$(PY) -m pytest

repro: setup
	dvc repro
