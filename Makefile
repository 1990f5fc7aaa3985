# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# The install step pins the CPU build of torch first so nothing pulls a CUDA build;
# users with a GPU install their own torch and then `pip install -e .`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]" "$(TORCH)"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/xvad demo

test: install
	$(VENV)/bin/ruff check src tests bench scripts research
	$(VENV)/bin/mypy src/xvad
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_core.py
	$(PY) bench/bench_bf16_maps.py
	$(PY) bench/bench_explain.py
	$(PY) bench/bench_stream.py
	$(PY) bench/bench_inputs.py
	$(PY) bench/bench_frame_cost.py
	$(PY) bench/bench_backbone_memory.py
	$(PY) bench/bench_crop.py
	$(PY) bench/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
