# bonemet: make demo | make test | make install | make nextflow
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make test's pytest-xdist workers (TEST_WORKERS=0 runs in one process)
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast lint nextflow clean browser container base-image container-engine

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is required: set PYTHON=/path/to/python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,metrics,ligrec]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install bonemet with the test, metrics and ligrec extras

demo: install  ## run the pipeline on 20,000 generated cells into results/demo
	$(BIN)/bonemet demo --out results/demo

browser:  ## headless Chromium for the report test (Debian's chromium, when missing)
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium; }

container-engine:  ## Debian's docker.io and debootstrap for the container tests (when missing)
	@{ command -v dockerd >/dev/null && command -v debootstrap >/dev/null; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y docker.io debootstrap; }

base-image:  ## bonemet-base:bookworm from the Debian mirror (root; for hosts without a registry)
	bash scripts/make_base_image.sh

container:  ## the image bonemet:<version> (ENGINE=docker|podman BASE= CA= CONSTRAINTS= BUILD_ARGS=)
	bash scripts/build_container.sh

test: install nextflow browser container-engine  ## the whole test suite
	PATH="$(CURDIR)/bin:$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --durations=15 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

FAST_TIERS := not (slow or nextflow or notebooks or browser or e2e or realdata or container or gpu)

test-fast: install  ## the unit tier for the edit-run loop (no Nextflow, notebooks, browser, real data, end-to-end runs)
	PATH="$(CURDIR)/bin:$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "$(FAST_TIERS)" --durations=10 $(PYTEST_ARGS)

nextflow:  ## pinned Nextflow from Maven Central into .nf/ + bin/nextflow (or use nextflow on PATH)
	bash scripts/install_nextflow.sh

lint: install
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/ruff format --check pipeline tests benchmarks notebooks

clean:
	rm -rf $(VENV) results work .nextflow* .pytest_cache
