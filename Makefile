# RewardEdit Kit. Two commands set everything up from nothing:
#   make course   - the whole course on the toy default (runs/toy-cpu/)
#   make test     - the test suite (library, CLI, notebooks)
#   make lab      - open the notebooks in JupyterLab
# Both create (or reuse) a local virtual environment in .venv and install the kit into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rewardedit-installed
PROFILE ?= toy-cpu
OUT    ?= runs/$(PROFILE)
# Where no CUDA GPU is present, take the CPU build of torch (a plain `torch` would pull a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0
# The installer (see setup below); `make setup UV=` installs with pip alone.
UV ?= uv>=0.5

.PHONY: setup course test test-slow lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv installs the same packages as pip in about a third of the time (RESULTS.md, fourteenth session); where it
	@# cannot be installed, pip does the work. uv reads no pip configuration: pip's find-links (a local wheel
	@# folder, as on the kit's CI machines) are passed on.
	@test -z "$(UV)" || $(BIN)/python -m pip install -q "$(UV)" || echo "uv could not be installed: installing with pip"
	@if test -n "$(UV)" && $(BIN)/python -m uv --version >/dev/null 2>&1; then \
		install="$(BIN)/python -m uv pip install -q --python $(BIN)/python --compile-bytecode $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))"; \
	else install="$(BIN)/python -m pip install -q"; fi; \
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "no CUDA here: installing $(TORCH_CPU)"; $$install "$(TORCH_CPU)" || exit 1; fi; \
	echo "installing the kit: $$install -e .[lab,test]"; $$install -e ".[lab,test]"
	@touch $(STAMP)

course: $(STAMP)
	$(BIN)/rewardedit course --profile $(PROFILE) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" --nbval-lax tests notebooks

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow tests

clean:
	rm -rf runs notebooks/runs .pytest_cache
