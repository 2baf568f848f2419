# Two commands from a fresh clone: `make run` and `make test`. Both build .venv when it is
# missing or pyproject.toml changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
# pip's find-links and constraints (pip.conf files or PIP_* variables), which uv does not read itself.
PIP_CONF = $(sort $(shell $(PY) -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$(1)='\(.*\)'$$/\1/p"))
FIND_LINKS := $(call PIP_CONF,find-links)
CONSTRAINT := $(call PIP_CONF,constraint)
UV_PIP_ARGS := $(foreach d,$(FIND_LINKS),--find-links $(d)) $(foreach c,$(CONSTRAINT),--constraint $(c))

.PHONY: run test test-fast test-slow lint clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# uv installs what pip would (the same versions, from the same indexes: pip's find-links and
	# constraints are passed on), in parallel: ~15 s instead of ~90 s on 2 cores. pip when uv or the local
	# torch wheel can't be had.
	# The CPU build of torch (the machine's local wheel) when it is there: a plain range would pull
	# a multi-GB CUDA build. Elsewhere any torch within the project's range does.
	if $(BIN)/python -m pip install -q uv && $(BIN)/python -m uv pip install -q --python $(BIN)/python \
	    $(UV_PIP_ARGS) "torch==2.13.0+cpu" -e ".[test]" 2>/dev/null; then :; else \
	  $(BIN)/python -m pip install -q "torch==2.13.0+cpu" 2>/dev/null || $(BIN)/python -m pip install -q "torch>=2.4,<=2.14.1"; \
	  $(BIN)/python -m pip install -q -e ".[test]"; \
	fi
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m agentcoder.run $(ARGS)

# The fast suite runs a test file per core (pytest-xdist; tests/conftest.py gives each worker one
# thread): most of its time is processes starting and importing, which one core spends alone.
# XDIST= runs it in one process.
XDIST ?= -n auto --dist loadfile

# Fast suite + the one end-to-end smoke of the embedded default (real wheels, real SmolLM2).
# Bytecode is written as modules are first imported, into .venv and the checkout only: where the
# machine sets PYTHONDONTWRITEBYTECODE, every process the tests start would compile torch and
# transformers from source again (the suite took 1.6x; compiling all of .venv up front costs ~20 s).
test: export PYTHONDONTWRITEBYTECODE =
test: $(STAMP)
	$(BIN)/ruff check agentcoder hydra_plugins tests scripts
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(XDIST) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m "smoke" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not smoke" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check agentcoder hydra_plugins tests scripts

clean-venv:
	rm -rf $(VENV)
