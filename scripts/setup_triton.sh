#!/usr/bin/env bash
# Create .venv-triton: the Triton Inference Server binary shipped inside the nvidia-pytriton wheel,
# plus onnxruntime, in a venv of its own because pytriton pins numpy<2 (the main .venv has numpy 2).
# Idempotent: re-running only checks that the pinned packages import.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${AIML021_TRITON_VENV:-.venv-triton}"
PYTHON="${PYTHON:-python3}"
PYTRITON_VERSION="0.7.0"
# onnxruntime 1.20.1 is the last release with wheels built against numpy 1.x that still run on
# Python 3.11 with numpy<2 (pytriton's pin).
ORT_VERSION="1.20.1"
# The OCR pipeline served as a Triton python-backend model (scripts/triton/pipeline_server.py, the
# peer of the gateway's pipeline models) runs common.pipeline there: OpenCV 4.x (numpy 1.x
# wheels), pyclipper for DB post-processing, onnx (common.bundle).
OPENCV_VERSION="4.10.0.84"
PYCLIPPER_VERSION="1.4.0"
ONNX_VERSION="1.17.0"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m
assert m.version("nvidia-pytriton") == "$PYTRITON_VERSION"
assert m.version("onnxruntime") == "$ORT_VERSION"
assert m.version("opencv-python-headless") == "$OPENCV_VERSION"
assert m.version("pyclipper") == "$PYCLIPPER_VERSION"
assert m.version("onnx") == "$ONNX_VERSION"
import pytriton, onnxruntime, cv2, pyclipper, onnx  # noqa: F401
PY
then
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "nvidia-pytriton==$PYTRITON_VERSION" "onnxruntime==$ORT_VERSION" \
    "opencv-python-headless==$OPENCV_VERSION" "pyclipper==$PYCLIPPER_VERSION" "onnx==$ONNX_VERSION"
fi
"$VENV/bin/python" -c "import pytriton, onnxruntime, numpy; print('triton venv ok: numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__)"
