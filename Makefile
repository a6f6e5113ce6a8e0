# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python


.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## Set up, generate the demo patients, and evaluate each of them.
demo: setup
	$(VENV)/bin/axiom-cds demo $(if $(AS_OF),--as-of $(AS_OF))

## Set up and run everything CI runs: ruff, mypy, pytest.
test: setup lint
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check adapter tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_evaluate.py

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache
