# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python


.PHONY: setup demo sandbox test lint postgres bench bench-service bench-load clean

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

## Set up and run everything CI runs: ruff, mypy, pytest (the store tests also against PostgreSQL).
test: setup lint postgres
	$(VENV)/bin/pytest -q

## PostgreSQL server binaries from Debian's package, for the store tests (which start their own server).
## Nothing to do when they are there; needs root or password-less sudo; a failed install fails only in CI.
PG_CTL_GLOB ?= /usr/lib/postgresql/*/bin/pg_ctl
postgres:
	@if ls $(PG_CTL_GLOB) >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "PostgreSQL is not installed and there is no apt-get: its store tests will skip"; [ -z "$$CI" ]; exit; \
	fi; \
	echo "Installing PostgreSQL from Debian's packages for the store tests..."; \
	sudo=$$([ "$$(id -u)" -eq 0 ] || echo "sudo -n"); log=$$(mktemp); \
	if $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >"$$log" 2>&1 && \
	   $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql </dev/null >>"$$log" 2>&1; \
	then rm -f "$$log"; ls $(PG_CTL_GLOB); \
	else tail -n 30 "$$log"; rm -f "$$log"; echo "Could not install PostgreSQL: its store tests will skip"; [ -z "$$CI" ]; fi

lint: setup
	$(VENV)/bin/ruff check adapter tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_evaluate.py

## The service over HTTP: hook vs bare endpoint, hook vs its slowest FHIR query, throughput (about 2 min).
bench-service: setup
	$(PY) bench/bench_service.py

## `axiom-cds serve --workers 2` with auth under 64 concurrent EHRs (60 s), then while its FHIR server is
## killed and restarted (40 s or until recovery): throughput, latencies, errors, memory (about 3 min).
bench-load: setup
	$(PY) bench/bench_load.py

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache
