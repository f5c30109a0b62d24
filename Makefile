# Set-up and entry points. `make test` and `make train` build .venv first when it is missing or stale.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := requirements.txt requirements-dev.txt requirements-horovod.txt

# TensorFlow 1.15 exists only for Python <= 3.7. Take a real python3.7 on PATH first (the pyenv
# shim refuses to run while another version is selected, so it fails the check), then pyenv's builds.
PYTHON37 ?= $(shell for p in python3.7 $$(pyenv root 2>/dev/null)/versions/3.7*/bin/python3.7 \
	/usr/local/bin/python3.7 /usr/bin/python3.7; do \
	  if "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' >/dev/null 2>&1; then \
	    command -v "$$p" || echo "$$p"; break; fi; done)

HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

PYTEST_ARGS ?=
TRAIN_ARGS ?=

.PHONY: help venv test test-fast train eval benchmark clean

help:
	@echo "make train      train an efficient DenseNet-BC on the bundled digits set, then evaluate it"
	@echo "make test       run the whole test suite (slow tests included)"
	@echo "make test-fast  run the suite without the tests marked slow"
	@echo "make benchmark  memory and step time, naive vs efficient, DenseNet-BC-100 k=12 batch 64"
	@echo "make venv       only build $(VENV) (Python 3.7, TensorFlow 1.15.5, Horovod with Gloo)"

venv: $(STAMP)

$(STAMP): $(REQS)
	@if [ -z "$(PYTHON37)" ]; then \
	  echo "error: no working python3.7 found. TensorFlow 1.15 runs only on Python 3.7 or older." >&2; \
	  echo "  install it, e.g. 'pyenv install 3.7.16' (pyenv), 'apt-get install python3.7 python3.7-venv'" >&2; \
	  echo "  (deadsnakes) or 'conda create -n py37 python=3.7', or pass PYTHON37=/path/to/python3.7" >&2; \
	  exit 1; fi
	@if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' 2>/dev/null; then \
	  echo "creating $(VENV) with $(PYTHON37)"; rm -rf $(VENV); $(PYTHON37) -m venv $(VENV); fi
	$(PY) -m pip install --upgrade 'pip<24.1' 'setuptools<68' wheel
	$(PY) -m pip install -r requirements-dev.txt
	$(HOROVOD_ENV) $(PY) -m pip install --no-build-isolation -r requirements-horovod.txt
	$(VENV)/bin/horovodrun --check-build
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

train: $(STAMP)
	$(PY) train.py --dataset digits --model_dir runs/digits --efficient True $(TRAIN_ARGS)
	$(PY) eval.py --dataset digits --model_dir runs/digits

# The README's Performance table (about 25 minutes on 2 cores); BENCHMARK_ARGS=--quick for a check.
benchmark: $(STAMP)
	$(PY) -m benchmarks.memory --steps 3 --out benchmarks/results $(BENCHMARK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
