# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python


.PHONY: setup demo sandbox test lint bench bench-service clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## Set up; start a FHIR server with the demo patients and the CDS Hooks service, call the service
## twice as an EHR would, show the cards and check their verdicts, then stop both servers.
demo: setup
	$(VENV)/bin/axiom-cds sandbox --check $(if $(AS_OF),--as-of $(AS_OF))

## Set up and keep the sandbox running (FHIR server on 8090, service on 8080) until Ctrl-C.
sandbox: setup
	$(VENV)/bin/axiom-cds sandbox $(if $(AS_OF),--as-of $(AS_OF))

## Set up and run everything CI runs: ruff, mypy, pytest.
test: setup lint
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check adapter tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_evaluate.py

## The service over HTTP: hook vs bare endpoint, hook vs its slowest FHIR query, throughput (about 2 min).
bench-service: setup
	$(PY) bench/bench_service.py

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache
