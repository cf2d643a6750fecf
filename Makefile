# adaptrt: two commands on a fresh machine.
#   make demo   installs everything into .venv and runs `adaptrt demo` (simulated cohort -> runs/demo)
#   make test   installs everything into .venv (plus dciodvfy where apt-get exists) and runs lint, type-check
#               and the tests
#
# torch is installed first, pinned, so that pip does not pull a multi-GB CUDA build. Elsewhere choose
# another build with e.g.  make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: demo test test-slow lint install dicom3tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adaptrt demo --out $(DEMO_OUT) --overwrite

# dciodvfy (Debian package dicom3tools) judges DICOM conformance in the tests. Where apt-get exists (Debian,
# Ubuntu, CI) it is installed and the tests require it; elsewhere (macOS, other Linux) this step says how to
# install it and the few DICOM-conformance tests skip with a message naming dciodvfy.
dicom3tools:
	@if command -v dciodvfy >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; \
	else \
	  echo "note: dciodvfy (dicom3tools) is not installed and there is no apt-get here: the DICOM-conformance"; \
	  echo "      tests will be skipped. To run them, install dicom3tools (build it from source:"; \
	  echo "      https://www.dclunie.com/dicom3tools.html) so that dciodvfy is on PATH, then make test again."; \
	fi

# 1 (the dciodvfy tests fail when it is missing) where dciodvfy is installed or apt-get could install it, else 0
# (they skip); evaluated when the tests start, after the dicom3tools step. Override: make test REQUIRE_DCIODVFY=1
REQUIRE_DCIODVFY ?= $$( { command -v dciodvfy || command -v apt-get; } >/dev/null 2>&1 && echo 1 || echo 0 )

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: $(STAMP) dicom3tools lint
	ADAPTRT_REQUIRE_DCIODVFY=$(REQUIRE_DCIODVFY) $(BIN)/pytest -q

test-slow: $(STAMP) dicom3tools
	ADAPTRT_REQUIRE_DCIODVFY=$(REQUIRE_DCIODVFY) $(BIN)/pytest -q -m slow

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
