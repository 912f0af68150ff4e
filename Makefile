# One task runner for people and CI. Every target sets itself up: a virtualenv with
# the locked dependencies is created on first use and refreshed when the lock changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean

$(STAMP): requirements.lock pyproject.toml setup.py $(wildcard src/consentgate/*/*.c src/consentgate/*/*.h)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "consentgate needs Python >= 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . || \
	  $(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## build a synthetic platform, import it, show decisions
	$(BIN)/consentgate demo --workdir demo

test: $(STAMP) lint typecheck  ## lint, type-check and run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  ## run the benchmarks (slow); figures go to docs/benchmarks.md by hand
	$(BIN)/python bench/ledger.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
