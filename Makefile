# Set-up and entry points on three stacks, chosen with TF=: 1.15 (the default; TensorFlow 1.15.5
# on Python 3.7, in .venv), 2.15 (TensorFlow 2.15.1 on Python 3.9-3.11, in .venv-tf2) and 2.21
# (TensorFlow 2.21 with tf-keras on Python 3.12/3.13, in .venv-tf221); TF=1 and TF=2 are the
# older names of the first two. Targets build their virtualenv first when it is missing or
# older than its requirements. `make test` tests all three stacks.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TF ?= 1.15
PYTEST_ARGS ?=
TRAIN_ARGS ?=
BENCHMARK_ARGS ?=

VENV1 := .venv
VENV2 := .venv-tf2
VENV3 := .venv-tf221
STAMP1 := $(VENV1)/.installed
STAMP2 := $(VENV2)/.installed
STAMP3 := $(VENV3)/.installed
REQS1 := requirements.txt requirements-dev.txt requirements-horovod.txt
REQS2 := requirements-tf2.txt requirements-dev.txt requirements-horovod.txt
REQS3 := requirements-tf221.txt requirements-tf221-keras.txt requirements-dev.txt \
	requirements-horovod.txt

STACK := $(or $(if $(filter 1,$(TF)),1.15),$(if $(filter 2,$(TF)),2.15),$(TF))
ifeq ($(STACK),1.15)
VENV := $(VENV1)
else ifeq ($(STACK),2.15)
VENV := $(VENV2)
else ifeq ($(STACK),2.21)
VENV := $(VENV3)
else
$(error TF must be 1.15, 2.15 or 2.21 (TensorFlow's version), not '$(TF)')
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RESULTS := benchmarks/results/tf$(STACK)
RUN_SUFFIX := $(if $(filter-out 1.15,$(STACK)),-tf$(STACK))

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
# TensorFlow 2.21 has wheels for Python 3.10 to 3.13: the newest 3.13 or 3.12 on PATH or under
# pyenv (the current Pythons no other stack serves).
PYTHON_TF221 ?= $(shell for p in python3.13 python3.12 \
	$$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[23].*/bin/python3 2>/dev/null | sort -rV); do \
	  if "$$p" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] <= (3, 13))' \
	    >/dev/null 2>&1; then "$$p" -c 'import sys; print(sys.executable)'; break; fi; done)

HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

# $(call install_horovod,VENV,SUFFIX,EDIT): Horovod 0.28.1 built from its sdist in build/, with two
# edits to its CMakeLists that only make the build cheaper: no debug info (its RelWithDebInfo adds
# -g, 30-40% of each file's compile time) and the plain `gloo` library built only when TensorFlow
# links it (the wheels of 1.15 and 2.15/2.21 link `compatible_gloo` / `compatible17_gloo`, a copy
# of the same 37 files). For TF 2.15 on 2 idle cores: 194 s -> 119 s, wheel 16.1 MB -> 1.0 MB
# (`pip wheel --no-build-isolation` of the sdist as released and as edited). EDIT is a further
# command run in the source tree. Each edit is checked, so a Horovod whose CMakeLists moved those lines
# stops the build instead of silently building something else.
define install_horovod
	rm -rf build/horovod$(2) && mkdir -p build/horovod$(2)
	$(1)/bin/python -m pip download --no-deps --no-binary :all: -d build/horovod$(2) \
	  -r requirements-horovod.txt
	tar xzf build/horovod$(2)/horovod-*.tar.gz -C build/horovod$(2) --strip-components 1
	sed -i -e 's/string(REPLACE "-O2" "-O3"/string(REPLACE "-O2 -g" "-O3"/' \
	  -e 's|^\( *add_subdirectory(third_party/gloo\))|\1 EXCLUDE_FROM_ALL)|' \
	  build/horovod$(2)/CMakeLists.txt
	grep -q 'REPLACE "-O2 -g" "-O3" CMAKE_CXX_FLAGS_RELWITHDEBINFO' build/horovod$(2)/CMakeLists.txt
	grep -q 'add_subdirectory(third_party/gloo EXCLUDE_FROM_ALL)' build/horovod$(2)/CMakeLists.txt
	$(if $(3),cd build/horovod$(2) && $(3))
	$(HOROVOD_ENV) $(1)/bin/python -m pip install --no-build-isolation ./build/horovod$(2)
	$(1)/bin/horovodrun --check-build
	rm -rf build/horovod$(2)
endef

# Horovod 0.28.1, its last release, compiles horovod/tensorflow/xla_mpi_ops.cc (XLA-compiled
# all-reduce, opt-in at run time and GPU-only), whose XLA headers TensorFlow 2.21's wheel does
# not ship; everything else builds as it is. For TF 2.21 the sdist is built without that file.
HOROVOD_NO_XLA = sed -i '/horovod\/tensorflow\/xla_mpi_ops\.cc/d' horovod/tensorflow/CMakeLists.txt && \
	! grep -q xla_mpi_ops horovod/tensorflow/CMakeLists.txt

FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: help venv venv-tf2 venv-tf221 test test-tf1 test-tf2 test-tf221 test-fast train \
	fashion-mnist train-fashion-mnist benchmark clean

help:
	@echo "make train        train an efficient DenseNet-BC on the bundled digits, then evaluate it"
	@echo "                  (TensorFlow 1.15; TF=2.15 or TF=2.21 for the other stacks)"
	@echo "make test         the whole test suite on the three stacks (slow tests included)"
	@echo "make test-tf1     ... on TensorFlow 1.15 only; test-tf2: 2.15 only; test-tf221: 2.21 only"
	@echo "make test-fast    the suite without the tests marked slow, on the TF= stack"
	@echo "make train-fashion-mnist"
	@echo "                  the README's real-data run on Fashion-MNIST (60,000 images), then the"
	@echo "                  10,000 test images (hours on 2 cores; resumable)"
	@echo "make fashion-mnist  install Debian's dataset-fashion-mnist (or say how to get it)"
	@echo "make benchmark    memory, step time, graph size, naive vs efficient vs shared (TF=)"
	@echo "make venv         only build $(VENV1) (Python 3.7, TensorFlow 1.15.5, Horovod with Gloo)"
	@echo "make venv-tf2     only build $(VENV2) (Python 3.9-3.11, TensorFlow 2.15.1, Horovod)"
	@echo "make venv-tf221   only build $(VENV3) (Python 3.12/3.13, TensorFlow 2.21, Horovod)"

# $(call new_venv,DIR,PYTHON,REQUIREMENTS): a TF 2 virtualenv with its requirements and pytest.
define new_venv
	@if [ ! -x $(1)/bin/python ]; then echo "creating $(1) with $(2)"; $(2) -m venv $(1); fi
	$(1)/bin/python -m pip install --upgrade pip 'setuptools<70' wheel
	$(1)/bin/python -m pip install -r $(3) -r requirements-dev.txt
endef

venv: $(STAMP1)

venv-tf2: $(STAMP2)

venv-tf221: $(STAMP3)

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
	$(call install_horovod,$(VENV1),-tf1.15)
	touch $(STAMP1)

$(STAMP2): $(REQS2)
	@if [ -z "$(PYTHON_TF2)" ]; then \
	  echo "error: no Python 3.9, 3.10 or 3.11 found: TensorFlow 2.15 has wheels for those only." >&2; \
	  echo "  install one (e.g. 'pyenv install 3.11.7') or pass PYTHON_TF2=/path/to/python3.11" >&2; \
	  exit 1; fi
	$(call new_venv,$(VENV2),$(PYTHON_TF2),requirements-tf2.txt)
	$(call install_horovod,$(VENV2),-tf2.15)
	touch $(STAMP2)

$(STAMP3): $(REQS3)
	@if [ -z "$(PYTHON_TF221)" ]; then \
	  echo "error: no Python 3.12 or 3.13 found: this stack serves the current Pythons (TensorFlow 2.21)." >&2; \
	  echo "  install one (e.g. 'pyenv install 3.13.0', or your distribution's python3.12-venv)" >&2; \
	  echo "  or pass PYTHON_TF221=/path/to/python3.13" >&2; \
	  exit 1; fi
	$(call new_venv,$(VENV3),$(PYTHON_TF221),requirements-tf221.txt)
	$(VENV3)/bin/python -m pip install --no-deps -r requirements-tf221-keras.txt
	$(call install_horovod,$(VENV3),-tf2.21,$(HOROVOD_NO_XLA))
	touch $(STAMP3)

# Every suite runs even when one fails. Each runs the cross-stack tests against the next stack
# round the ring (1.15 -> 2.15 -> 2.21 -> 1.15): one test moves a model dir both ways, so the
# ring covers every pair in both directions and each stack trains first once and resumes once.
test: $(STAMP1) $(STAMP2) $(STAMP3)
	@status=0; \
	echo "== TensorFlow 1.15 (Python 3.7, $(VENV1)) =="; \
	OTHER_STACKS=$(VENV2)/bin/python $(VENV1)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	echo "== TensorFlow 2.15 ($(VENV2)) =="; \
	OTHER_STACKS=$(VENV3)/bin/python $(VENV2)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	echo "== TensorFlow 2.21 ($(VENV3)) =="; \
	OTHER_STACKS=$(VENV1)/bin/python $(VENV3)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	exit $$status

test-tf1: $(STAMP1)
	$(VENV1)/bin/python -m pytest tests $(PYTEST_ARGS)

test-tf2: $(STAMP2)
	$(VENV2)/bin/python -m pytest tests $(PYTEST_ARGS)

test-tf221: $(STAMP3)
	$(VENV3)/bin/python -m pytest tests $(PYTEST_ARGS)

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

# The README's Fashion-MNIST result with the dataset's defaults (train.py --dataset
# fashion_mnist). DATA_DIR=DIR reads the files from DIR, downloading (and MD5-checking) those it
# lacks.
train-fashion-mnist: $(STAMP) $(if $(DATA_DIR),,fashion-mnist)
	$(PY) train.py --dataset fashion_mnist --efficient shared --model_dir runs/fashion_mnist$(RUN_SUFFIX) \
	  $(if $(DATA_DIR),--data_dir $(DATA_DIR) --download True) $(TRAIN_ARGS)
	$(PY) eval.py --model_dir runs/fashion_mnist$(RUN_SUFFIX) $(if $(DATA_DIR),--data_dir $(DATA_DIR))

# BENCHMARK_ARGS adds the paper's models (see benchmarks/README.md); --quick checks the code.
benchmark: $(STAMP)
	$(PY) -m benchmarks.memory --out $(RESULTS) $(BENCHMARK_ARGS)

clean:
	rm -rf $(VENV1) $(VENV2) $(VENV3) build runs .pytest_cache
