# The two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python


.PHONY: setup demo sandbox test lint postgres podman bench bench-service bench-load bench-screen clean

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

## Set up and run everything CI runs: ruff, mypy, pytest (the store tests also against PostgreSQL, the
## image test with podman).
test: setup lint postgres podman chromium java
	$(VENV)/bin/pytest -q

## $(call apt_install,PACKAGES,NAME,PURPOSE,SKIPPED,CHECK): install Debian packages that a test needs and this
## machine lacks (needs root or password-less sudo), then run CHECK. A failure fails only in CI: elsewhere the
## tests that need them (SKIPPED) skip and say why.
define apt_install
if ! command -v apt-get >/dev/null 2>&1; then \
  echo "$(2) is not installed and there is no apt-get: $(4) will skip"; [ -z "$$CI" ]; exit; \
fi; \
echo "Installing $(2) from Debian's packages for $(3)..."; \
sudo=$$([ "$$(id -u)" -eq 0 ] || echo "sudo -n"); log=$$(mktemp); \
if $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >"$$log" 2>&1 && \
   $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $(1) </dev/null >>"$$log" 2>&1; \
then rm -f "$$log"; $(5); \
else tail -n 30 "$$log"; rm -f "$$log"; echo "Could not install $(2): $(4) will skip"; [ -z "$$CI" ]; exit; fi
endef

## PostgreSQL server binaries from Debian's package, for the store tests (which start their own server).
## Nothing to do when they are there; needs root or password-less sudo; a failed install fails only in CI.
PG_CTL_GLOB ?= /usr/lib/postgresql/*/bin/pg_ctl
postgres:
	@if ls $(PG_CTL_GLOB) >/dev/null 2>&1; then exit 0; fi; \
	$(call apt_install,postgresql,PostgreSQL,the store tests,its store tests,ls $(PG_CTL_GLOB))

## podman (with runc) from Debian's packages, for the image test (tests/test_image.py), and its base image
## localhost/debian-python:bookworm made from Debian's packages with mmdebstrap (there is no image registry
## here: ../shared/reference/containers.md). Nothing to do when both are there; installing needs root or
## password-less sudo; a failure fails only in CI (locally the image test then skips and says why).
PODMAN_PACKAGES ?= podman runc mmdebstrap uidmap fuse-overlayfs slirp4netns
BASE_IMAGE ?= localhost/debian-python:bookworm
# as Debian's -slim images: no manual pages, documentation (copyright files kept) or translations
BASE_SLIM := --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright'
podman:
	@if ! command -v podman >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1 || [ ! -x /usr/sbin/runc ]; then \
	  $(call apt_install,$(PODMAN_PACKAGES),podman,the image test,the image test,podman --version); \
	fi; \
	if podman image exists $(BASE_IMAGE); then exit 0; fi; \
	echo "Building the base image $(BASE_IMAGE) from Debian's packages (mmdebstrap, about 30 s)..."; \
	dir=$$(mktemp -d); log=$$dir/log; \
	if mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates $(BASE_SLIM) \
	     bookworm "$$dir/rootfs.tar" http://deb.debian.org/debian </dev/null >"$$log" 2>&1 && \
	   podman import "$$dir/rootfs.tar" $(BASE_IMAGE) >>"$$log" 2>&1; \
	then rm -rf "$$dir"; echo "$(BASE_IMAGE) built"; \
	else tail -n 30 "$$log"; rm -rf "$$dir"; echo "Could not build $(BASE_IMAGE): the image test will skip"; [ -z "$$CI" ]; fi

## Chromium from Debian's package, for the review app's browser test (tests/test_review_browser.py drives
## it with Playwright, which never downloads a browser of its own). Nothing to do when /usr/bin/chromium is
## there; installing needs root or password-less sudo; a failure fails only in CI (locally that test skips).
CHROMIUM ?= /usr/bin/chromium
.PHONY: chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	$(call apt_install,chromium,Chromium,the browser test,the browser test,$(CHROMIUM) --version)

## A Java runtime from Debian's package, for the Spark engine's tests (tests/test_screen_spark.py: PySpark 4
## needs Java 17 or later). Nothing to do when `java` is there; installing needs root or password-less sudo; a
## failure fails only in CI (locally those tests then skip and say why).
.PHONY: java
java:
	@if command -v java >/dev/null 2>&1; then exit 0; fi; \
	$(call apt_install,openjdk-17-jre-headless,Java 17,the Spark engine's tests,the Spark engine's tests,java -version)

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
bench-screen: setup
	$(PY) bench/bench_screen.py
