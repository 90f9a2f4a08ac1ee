# Set-up and entry points. `make demo` and `make test` each build a virtual environment from
# scratch (torch pinned to 2.13.0, installed first so no other package pulls a CUDA build),
# install nybble with its test extras (compiling the C++ CPU kernels), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.nybble-installed

.PHONY: demo test bench-cpu install clean

$(STAMP): pyproject.toml CMakeLists.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q scikit-build-core nanobind cmake ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nybble demo

test: $(STAMP)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e . >/dev/null
	$(PY) -m pytest -q -p no:cacheprovider tests

bench-cpu: $(STAMP)
	$(VENV)/bin/nybble bench cpu

clean:
	rm -rf $(VENV) build
