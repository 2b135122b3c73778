#!/usr/bin/env bash
# Regenerates agentmesh/v1/ from proto/ (Python, gRPC stubs and .pyi type stubs).
# Usage: scripts/genproto.sh [OUT_DIR]   (default: the package itself)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$py"):$PATH"
out=${1:-.}
mkdir -p "$out/agentmesh/v1"
"$py" -m grpc_tools.protoc -I proto \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/agentmesh/v1/*.proto
touch "$out/agentmesh/v1/__init__.py"
