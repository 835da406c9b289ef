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

# CPU against GPU on this machine (under 8 minutes on one GPU): $(OUT)/gpu-check.json and gpu-check.md.
# Runs in $(GPU_VENV) (which also sees system-wide packages), installing the GPU builds there when
# missing, from $(WHEELS) alone when that folder holds wheels (no network needed).
# DRY_RUN=1: the same steps on the CPU with tiny sizes, in $(VENV); CI runs it (tests/test_gpu_check.py).
OUT ?= runs/gpu-check
GPU_VENV ?= .venv-gpu
WHEELS ?= wheels
.PHONY: gpu-check
gpu-check: $(if $(filter 1,$(DRY_RUN)),$(TEST_STAMP))
ifeq ($(DRY_RUN),1)
	$(PY) benchmarks/gpu_check.py --dry-run --out "$(OUT)"
else
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python benchmarks/gpu_check.py --install --wheels "$(WHEELS)" --out "$(OUT)"
endif

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
