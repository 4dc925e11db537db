# onnxedge: the two commands of the quick start are `make export` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= cpu,train,edge,parquet,ray,dev
ARTIFACTS ?= artifacts

# The strict editable install links each source file; a new module needs a
# re-install, so the install stamp depends on the list of source files.
SOURCES := $(sort $(wildcard models/*.py export/*.py runtime/*.py))

.PHONY: setup setup-gpu test test-fast lint format export export-int8 bench bench-cnn bench-score bench-variants bench-ray gpu-check clean help
.DEFAULT_GOAL := help

help:
	@echo "make export   train, export and verify the default models into $(ARTIFACTS)/"
	@echo "make test     run the whole test suite"
	@echo "make lint     ruff + mypy"
	@echo "make bench    run the benchmarks (writes benchmarks/RESULTS.md)"
	@echo "make bench-score | bench-cnn | bench-variants | bench-ray   the focused benchmarks"
	@echo "make gpu-check  compare CUDA with CPU on the default models (needs onnxruntime-gpu)"
	@echo "make setup    create .venv with everything (idempotent)"
	@echo "make clean    remove .venv, build files and artifacts"

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "onnxedge needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(VENV)/sources.txt: FORCE | $(VENV)/bin/python
	@echo '$(SOURCES)' | cmp -s - $@ || echo '$(SOURCES)' > $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/sources.txt | $(VENV)/bin/python
	flock $(VENV)/.lock $(PIP) install --quiet -c constraints.txt -e ".[$(EXTRAS)]" --config-settings editable_mode=strict
	@touch $@

setup: $(VENV)/.installed

# GPU runtime: onnxruntime-gpu replaces onnxruntime (never both installed).
setup-gpu: setup
	$(PIP) uninstall --yes onnxruntime onnxruntime-gpu
	$(PIP) install --quiet "onnxruntime-gpu>=1.18"

test: setup
	$(PY) -m pytest -n 2 --dist loadfile -q

test-fast: setup
	$(PY) -m pytest -q -x -m "not slow"

lint: setup
	$(VENV)/bin/ruff check models export runtime tests benchmarks
	$(VENV)/bin/ruff format --check models export runtime tests benchmarks
	$(VENV)/bin/mypy -p onnxedge.models -p onnxedge.export -p onnxedge.runtime

format: setup
	$(VENV)/bin/ruff check --fix models export runtime tests benchmarks
	$(VENV)/bin/ruff format models export runtime tests benchmarks

export: setup
	$(PY) -m onnxedge.export.default_models --out $(ARTIFACTS)

export-int8: setup
	$(PY) -m onnxedge.export.default_models --out $(ARTIFACTS) --variants int8,fp16

bench: setup
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.bench_cnn

# Focused benchmarks, each with its own committed results file in benchmarks/.
bench-score: setup
	$(PY) -m benchmarks.bench_score

bench-cnn: setup
	$(PY) -m benchmarks.bench_cnn

bench-variants: setup
	$(PY) -m benchmarks.bench_variants

bench-ray: setup
	$(PY) -m benchmarks.bench_ray

gpu-check: setup
	$(PY) benchmarks/gpu_check.py --artifacts $(ARTIFACTS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis $(ARTIFACTS) runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

FORCE:
