# Every target creates/reuses .venv and installs the pinned, tested set (constraints.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= results

.PHONY: demo test test-fast lint format perf clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shiftbench run benchmarks/quickstart.yml --store $(STORE)
	$(BIN)/shiftbench report benchmarks/quickstart.yml --store $(STORE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	# Benchopt's own checks; get_data of the real-data sets needs their files (tests/test_data_* cover those loaders).
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/benchopt test . --skip-install -q -k "'not (test_dataset_get_data and not digits)'"

# The inner loop: everything but the tests marked slow (subprocess kills, lock holders, timeouts).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

perf: $(STAMP)
	$(BIN)/python perf/overhead.py
