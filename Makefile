# adaptrt: two commands on a fresh machine.
#   make demo   installs everything into .venv and runs `adaptrt demo` (simulated cohort -> runs/demo)
#   make test   installs everything into .venv (plus dciodvfy) and runs lint, type-check and the tests
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

# dciodvfy (Debian package dicom3tools) judges DICOM conformance in the tests.
dicom3tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: $(STAMP) dicom3tools lint
	ADAPTRT_REQUIRE_DCIODVFY=1 $(BIN)/pytest -q

test-slow: $(STAMP) dicom3tools
	ADAPTRT_REQUIRE_DCIODVFY=1 $(BIN)/pytest -q -m slow

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
