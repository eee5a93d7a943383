# kdpipe: `make demo` sets everything up and runs the default pipeline; `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
# dvc.yaml runs `python -m stages ...`: the venv's python must come first on PATH
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint bench bench-families data env clean-env dvc.yaml study

$(BIN)/kdpipe: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>/dev/null || true
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

env: $(BIN)/kdpipe  ## create .venv and install kdpipe with exact pins

data:  ## make sure Fashion-MNIST is on this machine (Debian package, else torchvision download)
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: Debian package present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) && echo "Fashion-MNIST: installed dataset-fashion-mnist"; \
	elif [ -d data/raw/FashionMNIST/raw ]; then \
	  echo "Fashion-MNIST: found under data/raw"; \
	else \
	  $(BIN)/python -c "import torchvision; torchvision.datasets.FashionMNIST('data/raw', download=True); torchvision.datasets.FashionMNIST('data/raw', train=False, download=True)" \
	  || { echo "Fashion-MNIST is missing: install Debian's dataset-fashion-mnist (as root) or put the files under data/raw/FashionMNIST/raw" >&2; exit 1; }; \
	fi

demo: env data  ## set up, get the data, run the default pipeline with dvc repro, print the results table
	@test -d .git || (git init -q && git add -A && git commit -qm "kdpipe" >/dev/null)
	$(BIN)/kdpipe dvc-yaml
	$(BIN)/dvc repro
	@echo; cat results/report.md

PROFILE ?= profiles/study.yaml
JOBS ?= 2
# A study's models are independent jobs of one thread each (base.threads: 1): repro-parallel runs JOBS of
# them at once in dependency order and records them with dvc commit; dvc repro then finds them up to date.
study: env data  ## copy PROFILE to params.yaml, run it with JOBS stages at once, print the report
	cp $(PROFILE) params.yaml
	$(BIN)/kdpipe dvc-yaml
	$(BIN)/kdpipe repro-parallel --jobs $(JOBS)
	$(BIN)/dvc repro
	@echo; cat results/report.md

# Test files run in TEST_JOBS processes (pytest-xdist), each file in one process: a file's tests share its
# module fixtures (an end-to-end project, an export) and run in order; TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= 2
test: env  ## set up and run the test suite
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadscope

lint: env  ## house style: ruff lint and format check (line length 110)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dvc.yaml: env  ## regenerate the stage file from params.yaml (after adding, removing or re-wiring models)
	$(BIN)/kdpipe dvc-yaml

bench: env data  ## fit vs plain PyTorch, KD epoch cost, ORT INT8 vs torch fp32, loader vs training, INT8 per family; bench/*.md
	$(BIN)/python -m stages bench --loader --families

bench-families: env data  ## INT8 vs fp32 per model family at 96 px (about 4 min on 2 cores); writes bench/results_int8_families.md
	$(BIN)/python -m stages bench --families --no-main
