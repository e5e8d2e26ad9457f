# lstm-embed: two commands on a fresh Debian/Ubuntu machine:
#   make demo   sample model -> C -> Cortex-M4 firmware in QEMU -> comparison with Keras
#   make test   the test suite (host C, sanitizers, QEMU on every emulated core)
# Each installs what it needs: Python packages into .venv; Debian packages
# (gcc, gcc-arm-none-eabi, newlib, qemu-system-arm, cppcheck, cmake) when missing and running
# as root.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm cppcheck cmake
JOBS ?= 2

.PHONY: demo test bench fuzz fuzz-qemu fuzz-onnx lint toolchain venv clean accuracy zoo

venv: $(STAMP)

# setuptools announces every editable install of a flat layout ("Editable installation. Please
# be careful with folders..."): information, not a problem, so PYTHONWARNINGS leaves it out.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(MAKE) --no-print-directory apt-python
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation:UserWarning' \
	  $(VENV)/bin/pip install --quiet -e '.[dev,flash]'
	touch $(STAMP)

apt-python:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; \
	else echo "python3-venv is missing: run 'sudo apt-get install python3-venv' and retry"; exit 1; fi

# Cross toolchain and QEMU: installed when missing and root, otherwise a message saying how.
toolchain:
	@missing=""; for tool in cc arm-none-eabi-gcc qemu-system-arm cppcheck cmake; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (Debian packages: $(APT_PACKAGES))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	  else \
	    echo "missing:$$missing. Install with: sudo apt-get install $(APT_PACKAGES)"; \
	    echo "(host-only tests still run; firmware tests are skipped)"; \
	  fi; \
	fi

demo: venv toolchain
	$(PY) -m lstm_embed.tools.demo

# one BLAS thread per test worker: the workers already fill the cores, and OpenBLAS threads
# spinning beside them made small matmuls many times slower on a 2-core machine
test: venv toolchain
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) tests

bench: venv toolchain
	mkdir -p build && $(PY) -m lstm_embed.tools.bench --markdown BENCHMARKS.md --chart docs/bench.png --doc docs/speed.md --json build/bench.json --jobs $(JOBS)
	$(PY) -m lstm_embed.tools.bench_window_layers --markdown BENCHMARKS.md --json build/bench_window_layers.json

# Random chains, then random graphs (GRAPHS of them), host C vs the reference (docs/testing.md).
fuzz: venv toolchain
	$(PY) -m lstm_embed.tools.fuzz --models $${MODELS:-10000} --jobs $(JOBS)
	$(PY) -m lstm_embed.tools.fuzz --graphs --models $${GRAPHS:-1000} --seed $${SEED:-0} --jobs $(JOBS)

# Random models written as ONNX graphs, converted from those files, host C vs the reference.
fuzz-onnx: venv toolchain
	$(PY) -m lstm_embed.tools.fuzz --onnx --models $${MODELS:-2000} --seed $${SEED:-0} --jobs $(JOBS)

# Random models (chains, then GRAPHS graphs) as Cortex-M0, M4 and M55 firmware in QEMU, every
# entry point vs the reference.
fuzz-qemu: venv toolchain
	$(PY) -m lstm_embed.tools.fuzz --qemu --models $${MODELS:-500} --seed $${SEED:-0} --jobs $(JOBS)
	$(PY) -m lstm_embed.tools.fuzz --graphs --qemu --models $${GRAPHS:-100} --seed $${SEED:-0} --jobs $(JOBS)

# docs/accuracy.md's tables: the trained samples, then the recurrent family
accuracy: venv
	$(PY) scripts/accuracy.py --doc docs/accuracy.md
	@echo
	$(PY) scripts/accuracy.py --family --doc docs/accuracy.md

# docs/accuracy-zoo.md: the model zoo (lstm_embed/zoo.py, trained once and cached), the default
# against --rounding nearest and --weights int16 on every model's test split
# (one BLAS thread per process: small matrices, and threads that wait spin on a busy machine)
zoo: venv
	OPENBLAS_NUM_THREADS=1 $(PY) scripts/zoo_accuracy.py --jobs $(JOBS) --markdown docs/accuracy-zoo.md --json build/zoo.json

lint: venv
	$(VENV)/bin/ruff check lstm_embed tests scripts
	$(VENV)/bin/ruff format --check lstm_embed tests scripts

clean:
	rm -rf build demo-out .pytest_cache
