# Two commands to a result: `make demo` (train on the embedded digits) and `make test` (lint, types, docs, package,
# tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED = 1

.PHONY: demo test test-slow lint docs package bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel

$(VENV)/.base: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.base
	$(PY) -m lightning_supcon fit --config configs/digits.yaml

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy lightning_supcon benchmarks

# The API and user documentation (docs/, mkdocs.yml) into site/; --strict: any warning (a broken link or
# cross-reference, a docstring argument that is not in the signature) fails.
docs: $(VENV)/.dev
	$(PY) -m mkdocs build --strict --site-dir site

# sdist + wheel into dist/ with the venv's setuptools (--no-isolation: no download of a build environment), then
# twine's check of the metadata and README rendering. Nothing is uploaded.
package: $(VENV)/.dev
	rm -rf dist
	$(PY) -m build --quiet --no-isolation --outdir dist .
	$(PY) -m twine check --strict dist/*

test: lint docs package
	$(PY) -m pytest -n 2 --dist worksteal --cov=lightning_supcon --cov-report=term --cov-fail-under=90 -q  # 2 workers (pytest-xdist); idle workers take queued tests from the busy one

test-slow: $(VENV)/.dev
	$(PY) -m pytest -m slow -q

bench: $(VENV)/.dev
	$(PY) benchmarks/loss.py
	$(PY) benchmarks/augment.py
	$(PY) benchmarks/ddp_cpu.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/options.py
	$(PY) benchmarks/digits_eval.py
	$(PY) benchmarks/gradient_cache.py --steps 1

clean:
	rm -rf outputs lightning_logs .pytest_cache .mypy_cache .ruff_cache .coverage* site dist build *.egg-info
