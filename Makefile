# Two commands do all set-up on a fresh machine:
#   make run    create .venv, install, run the main job (lkca-edge bench)
#   make test   create or reuse .venv, run the whole test suite (make test-fast: the fast tier)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lkca-edge-installed
PYTEST_ARGS ?=

.PHONY: run test test-fast install bench-perf clean

install: $(STAMP)

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build, while
# torch==2.13.0 is the CPU wheel executorch 1.5.1 is built against.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lkca-edge bench

# Both cores, one test file per worker (module fixtures such as the bench run are made once).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The fast tier: no conversions of their own, no training, no bench runs; on both cores.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS)

bench-perf: $(STAMP)
	$(PY) benchmarks/operator_forms.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
