#!/usr/bin/env bash
# Generates Python messages, gRPC stubs and typed stubs (.pyi) from proto/ into generated/python.
# Deterministic: the output depends only on proto/ and the pinned grpcio-tools/mypy-protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, symlinks kept (a venv's python)
BIN=$(dirname "$PY")
OUT=generated/python
rm -rf "$OUT"
mkdir -p "$OUT"
mapfile -t files < <(cd proto && find aiml021 inference -name '*.proto' | LC_ALL=C sort)
(cd proto && "$PY" -m grpc_tools.protoc -I . -I ../third_party/googleapis \
  --python_out="../$OUT" --grpc_python_out="../$OUT" \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" --mypy_out="../$OUT" \
  --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" --mypy_grpc_out="../$OUT" \
  "${files[@]}")
# Packages, so that `aiml021.<area>.v1` and `inference` import without path tricks.
find "$OUT" -type d | while read -r d; do
  [ -f "$d/__init__.py" ] || : > "$d/__init__.py"
done
: > "$OUT/aiml021/py.typed"
: > "$OUT/inference/py.typed"
rm -f "$OUT/__init__.py"
