"""Peer model servers for the capacity benchmark, each run by its own interpreter (their own
virtual environments under /tmp: kserve and mlserver pin versions the project's .venv does not
share). Each serves one ONNX model through onnxruntime on the KServe v2 gRPC protocol, the way a
user of that server would write it."""
