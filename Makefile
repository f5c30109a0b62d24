# Set-up and entry points on two stacks: TF=1 (default) is TensorFlow 1.15.5 on Python 3.7 in
# .venv; TF=2 is TensorFlow 2.15.1 (tf.compat.v1 graph mode) on the machine's python3 in
# .venv-tf2. Targets build their virtualenv first when it is missing or older than its
# requirements. `make test` runs the whole suite on both stacks.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TF ?= 1
PYTEST_ARGS ?=
TRAIN_ARGS ?=
BENCHMARK_ARGS ?=

VENV1 := .venv
VENV2 := .venv-tf2
STAMP1 := $(VENV1)/.installed
STAMP2 := $(VENV2)/.installed
REQS1 := requirements.txt requirements-dev.txt requirements-horovod.txt
REQS2 := requirements-tf2.txt requirements-dev.txt requirements-horovod.txt

ifeq ($(TF),2)
VENV := $(VENV2)
RESULTS := benchmarks/results/tf2
else ifeq ($(TF),1)
VENV := $(VENV1)
RESULTS := benchmarks/results
else
$(error TF must be 1 (TensorFlow 1.15) or 2 (TensorFlow 2.15), not '$(TF)')
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# TensorFlow 1.15 exists only for Python <= 3.7. Take a real python3.7 on PATH first (the pyenv
# shim refuses to run while another version is selected, so it fails the check), then pyenv's.
PYTHON37 ?= $(shell for p in python3.7 $$(pyenv root 2>/dev/null)/versions/3.7*/bin/python3.7 \
	/usr/local/bin/python3.7 /usr/bin/python3.7; do \
	  if "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' >/dev/null 2>&1; then \
	    command -v "$$p" || echo "$$p"; break; fi; done)
# TensorFlow 2.15 has wheels for Python 3.9 to 3.11: the machine's python3 if it is one of
# those, else the newest of them on PATH or under pyenv.
PYTHON_TF2 ?= $(shell for p in python3 python3.11 python3.10 python3.9 \
	$$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[01].*/bin/python3 2>/dev/null | sort -rV); do \
	  if "$$p" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' \
	    >/dev/null 2>&1; then "$$p" -c 'import sys; print(sys.executable)'; break; fi; done)

HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
RUN_SUFFIX := $(if $(filter 2,$(TF)),-tf2)

.PHONY: help venv venv-tf2 test test-tf1 test-tf2 test-fast train fashion-mnist \
	train-fashion-mnist benchmark clean

help:
	@echo "make train        train an efficient DenseNet-BC on the bundled digits, then evaluate it"
	@echo "                  (TensorFlow 1.15; 'make train TF=2' on TensorFlow 2.15)"
	@echo "make test         the whole test suite on both stacks (slow tests included)"
	@echo "make test-tf1     ... on TensorFlow 1.15 only; make test-tf2 on TensorFlow 2.15 only"
	@echo "make test-fast    the suite without the tests marked slow, on the TF=1|2 stack"
	@echo "make train-fashion-mnist"
	@echo "                  the README's real-data run: Fashion-MNIST (60,000 images), then the"
	@echo "                  10,000 test images (about 75 min with TF=2, 3 h with TF=1, on 2 cores)"
	@echo "make fashion-mnist  install Debian's dataset-fashion-mnist (or say how to get it)"
	@echo "make benchmark    memory and step time, naive vs efficient (TF=1|2)"
	@echo "make venv         only build $(VENV1) (Python 3.7, TensorFlow 1.15.5, Horovod with Gloo)"
	@echo "make venv-tf2     only build $(VENV2) (python3, TensorFlow 2.15.1, Horovod with Gloo)"

venv: $(STAMP1)

venv-tf2: $(STAMP2)

$(STAMP1): $(REQS1)
	@if [ -z "$(PYTHON37)" ]; then \
	  echo "error: no working python3.7 found. TensorFlow 1.15 runs only on Python 3.7 or older." >&2; \
	  echo "  install it, e.g. 'pyenv install 3.7.16' (pyenv), 'apt-get install python3.7 python3.7-venv'" >&2; \
	  echo "  (deadsnakes) or 'conda create -n py37 python=3.7', or pass PYTHON37=/path/to/python3.7" >&2; \
	  exit 1; fi
	@if [ ! -x $(VENV1)/bin/python ] || ! $(VENV1)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' 2>/dev/null; then \
	  echo "creating $(VENV1) with $(PYTHON37)"; rm -rf $(VENV1); $(PYTHON37) -m venv $(VENV1); fi
	$(VENV1)/bin/python -m pip install --upgrade 'pip<24.1' 'setuptools<68' wheel
	$(VENV1)/bin/python -m pip install -r requirements.txt -r requirements-dev.txt
	$(HOROVOD_ENV) $(VENV1)/bin/python -m pip install --no-build-isolation -r requirements-horovod.txt
	$(VENV1)/bin/horovodrun --check-build
	touch $(STAMP1)

$(STAMP2): $(REQS2)
	@if [ -z "$(PYTHON_TF2)" ]; then \
	  echo "error: no Python 3.9, 3.10 or 3.11 found: TensorFlow 2.15 has wheels for those only." >&2; \
	  echo "  install one (e.g. 'pyenv install 3.11.7') or pass PYTHON_TF2=/path/to/python3.11" >&2; \
	  exit 1; fi
	@if [ ! -x $(VENV2)/bin/python ]; then \
	  echo "creating $(VENV2) with $(PYTHON_TF2)"; $(PYTHON_TF2) -m venv $(VENV2); fi
	$(VENV2)/bin/python -m pip install --upgrade pip 'setuptools<70' wheel
	$(VENV2)/bin/python -m pip install -r requirements-tf2.txt -r requirements-dev.txt
	$(HOROVOD_ENV) $(VENV2)/bin/python -m pip install --no-build-isolation -r requirements-horovod.txt
	$(VENV2)/bin/horovodrun --check-build
	touch $(STAMP2)

# Both suites run even when the first fails; each runs the cross-stack test against the other.
test: $(STAMP1) $(STAMP2)
	@status=0; \
	echo "== TensorFlow 1.15 (Python 3.7, $(VENV1)) =="; \
	OTHER_STACK_PYTHON=$(VENV2)/bin/python $(VENV1)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	echo "== TensorFlow 2.15 ($(VENV2)) =="; \
	OTHER_STACK_PYTHON=$(VENV1)/bin/python $(VENV2)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	exit $$status

test-tf1: $(STAMP1)
	$(VENV1)/bin/python -m pytest tests $(PYTEST_ARGS)

test-tf2: $(STAMP2)
	$(VENV2)/bin/python -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

train: $(STAMP)
	$(PY) train.py --dataset digits --model_dir runs/digits$(RUN_SUFFIX) --efficient True $(TRAIN_ARGS)
	$(PY) eval.py --model_dir runs/digits$(RUN_SUFFIX)

# Debian ships Fashion-MNIST's four original files; elsewhere train.py downloads them.
fashion-mnist:
	@if [ -d $(FASHION_MNIST_DIR) ]; then echo "Fashion-MNIST is in $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  sudo apt-get install -y dataset-fashion-mnist; \
	else echo "error: no apt-get here; download the files instead:" \
	  "make train-fashion-mnist DATA_DIR=data/fashion-mnist" >&2; exit 1; fi

# The README's Fashion-MNIST result: the dataset's defaults (DenseNet-BC L=40 k=12, batch 64,
# 15 epochs), without recomputation: at 28x28 memory is small and it is the faster step on CPU.
# DATA_DIR=DIR reads the files from DIR, downloading (and MD5-checking) those it lacks.
train-fashion-mnist: $(STAMP) $(if $(DATA_DIR),,fashion-mnist)
	$(PY) train.py --dataset fashion_mnist --efficient False \
	  --model_dir runs/fashion_mnist$(RUN_SUFFIX) \
	  $(if $(DATA_DIR),--data_dir $(DATA_DIR) --download True) $(TRAIN_ARGS)
	$(PY) eval.py --model_dir runs/fashion_mnist$(RUN_SUFFIX) $(if $(DATA_DIR),--data_dir $(DATA_DIR))

# The README's Performance tables (about 35 minutes on 2 cores); BENCHMARK_ARGS=--quick checks.
benchmark: $(STAMP)
	$(PY) -m benchmarks.memory --steps 3 --out $(RESULTS) $(BENCHMARK_ARGS)

clean:
	rm -rf $(VENV1) $(VENV2) runs .pytest_cache
