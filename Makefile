# The two commands of the README: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
DEMO_STAMP := $(VENV)/.descend-demo
TEST_STAMP := $(VENV)/.descend-test

.PHONY: demo test bench clean

demo: $(DEMO_STAMP)
	$(VENV)/bin/descend data info mnist
	$(VENV)/bin/descend train mnist

# Debian's chromium and postgresql first (when missing): see scripts/system-packages.sh.
test: $(TEST_STAMP)
	bash scripts/system-packages.sh
	$(PY) -m pytest -q -p no:cacheprovider

# Speed against the peers (PyTorch, Keras, scikit-learn): tens of minutes on 2 cores.
bench: $(TEST_STAMP)
	$(PIP) -e ".[all,dev,bench]"
	$(PY) benchmarks/numpy_overhead.py --write
	$(PY) benchmarks/peers.py --write

$(PY):
	$(PYTHON) -m venv $(VENV)

# descend with its default engine (JAX) and nothing else: what a user needs to train.
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PIP) -e ".[jax]"
	touch $@

# Everything: every engine, the search extras and the test tools.
$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) -e ".[all,dev]"
	touch $@ $(DEMO_STAMP)

clean:
	rm -rf $(VENV) build src/*.egg-info
