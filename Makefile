# agentmesh developer and CI entry points. `make help` lists the targets.
#
# Everything runs from a project-local virtualenv (.venv) that the targets build themselves: a fresh machine
# needs only Python 3.11+ and, for `proto-lint`, npm. The venv is rebuilt from scratch whenever
# pyproject.toml or requirements.lock changes (tracked by a stamp file inside it).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.agentmesh-installed

# buf (protobuf lint) comes from npm, whose package carries the binary for each platform.
BUF_VERSION := 1.75.0
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_STAMP := $(TOOLS)/.buf-$(BUF_VERSION)

# Extra arguments for `make run`, e.g. make run ARGS='--config node.yaml'.
ARGS ?=

.PHONY: help venv test lint format typecheck pytest proto proto-check proto-lint bench run lock clean distclean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# --- environment -------------------------------------------------------------------------------------------

venv: $(VENV_STAMP) ## Create .venv and install the project with its pinned dev dependencies

$(VENV_STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "agentmesh needs Python 3.11 or newer; set PYTHON=/path/to/python3.11")'
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "ERROR: npm is needed to install buf for proto-lint" >&2; exit 1; }
	@echo "==> installing buf $(BUF_VERSION) into $(TOOLS)"
	rm -rf $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
		@bufbuild/buf@$(BUF_VERSION)
	touch $@

# --- checks ------------------------------------------------------------------------------------------------

test: proto-check proto-lint lint typecheck pytest ## Everything CI checks: protos, lint, types, tests

lint: $(VENV_STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV_STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV_STAMP) ## mypy (configured in pyproject.toml)
	$(BIN)/mypy

pytest: $(VENV_STAMP) ## Run the test suite only
	$(BIN)/pytest

# --- protobuf ----------------------------------------------------------------------------------------------

# Generated code is committed; both targets generate into a scratch dir first so that `proto` also drops the
# output of .proto files that were removed, and `proto-check` compares like with like.
proto: $(VENV_STAMP) ## Regenerate agentmesh/v1 from proto/
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PYTHON="$(CURDIR)/$(BIN)/python" scripts/genproto.sh "$$tmp" >"$$tmp/genproto.log" 2>&1 \
		|| { cat "$$tmp/genproto.log" >&2; exit 1; }; \
	rm -rf agentmesh/v1; cp -R "$$tmp/agentmesh/v1" agentmesh/v1; \
	echo "==> regenerated agentmesh/v1"

proto-check: $(VENV_STAMP) ## Fail if agentmesh/v1 is not what proto/ generates
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PYTHON="$(CURDIR)/$(BIN)/python" scripts/genproto.sh "$$tmp" >"$$tmp/genproto.log" 2>&1 \
		|| { cat "$$tmp/genproto.log" >&2; exit 1; }; \
	if ! diff -r -x __pycache__ "$$tmp/agentmesh/v1" agentmesh/v1 >"$$tmp/proto.diff"; then \
		head -n 200 "$$tmp/proto.diff"; \
		echo "ERROR: agentmesh/v1 is out of date with proto/ (diff above: generated vs committed)." >&2; \
		echo "       Run 'make proto' and commit the result." >&2; \
		exit 1; \
	fi; \
	echo "==> agentmesh/v1 matches proto/"

# buf comes from npm; on a machine without npm the lint is skipped with a notice rather than failing set-up.
proto-lint: ## buf lint (STANDARD rules, see buf.yaml); skipped when npm is absent
	@if command -v npm >/dev/null; then $(MAKE) $(BUF_STAMP) && $(BUF) lint && echo "==> buf lint clean"; \
	else echo "==> NOTICE: npm not found, skipping buf lint of proto/ (install Node.js to run it)"; fi

# --- running -----------------------------------------------------------------------------------------------

run: $(VENV_STAMP) ## Start the local demo mesh until Ctrl-C: agentmesh up $(ARGS)
	$(BIN)/agentmesh up $(ARGS)

# Benchmarks print their figures; here they run once each at a small size as a smoke test. A benchmark reads
# AGENTMESH_BENCH_SIZE (small|full) to pick its size.
bench: $(VENV_STAMP) ## Run benchmarks/*.py at a small size (files starting with _ are their helpers)
	@shopt -s nullglob; found=0; \
	for b in benchmarks/[!_]*.py; do \
		found=1; echo "==> $$b"; AGENTMESH_BENCH_SIZE=small $(BIN)/python "$$b"; \
	done; \
	[ $$found = 1 ] || echo "==> no benchmarks yet"

# --- maintenance -------------------------------------------------------------------------------------------

# Re-resolves the dev install in a throwaway venv, keeping every pin in requirements.lock that still fits,
# and writes the full pinned set back (the editable project itself excluded).
lock: ## Regenerate requirements.lock after a dependency change in pyproject.toml
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet -c requirements.lock -e '.[dev]'; \
	"$$tmp/venv/bin/python" -m pip freeze --exclude-editable >requirements.lock; \
	echo "==> wrote requirements.lock"

clean: ## Remove caches and build leftovers (keeps .venv and .tools)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -path ./$(TOOLS) -prune -o -name __pycache__ -type d -print0 \
		| xargs -0 rm -rf

distclean: clean ## clean, and remove .venv and .tools too
	rm -rf $(VENV) $(TOOLS)
