# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo lint test clean

setup: $(VENV)/.installed-demo

# torch/torchvision are pinned to the CPU-usable wheels this project is developed with;
# the package itself accepts a range (pyproject.toml).
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	touch $@

# Two stamps: `make demo` installs only what the demo needs; `make test` adds the test tools (pytest, ruff,
# mypy, kornia, scikit-image), also in a .venv that `make demo` made. Either reinstalls when pyproject.toml changes.
$(VENV)/.installed-demo: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/ssl-zoo demo

# ruff and mypy as configured in pyproject.toml; `make test` runs them first, so CI (.ci/run) does too.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
