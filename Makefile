# Every target installs what it needs first, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[torch,tensorflow,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## a real 8-trial TPE + ASHA sweep of a CNN on MNIST-5k, tracked in MLflow
	$(VENV)/bin/tunepipe sweep pipelines/configs/mnist_cnn.yaml

test: $(STAMP)  ## the default test suite, about 20 min on 2 cores (CI runs it, then test-slow)
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)  ## the long end-to-end sweeps (demo, torch vs tensorflow), about 8 min
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/overhead.py
