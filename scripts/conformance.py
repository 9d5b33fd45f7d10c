"""Triton conformance: one list of operations through the unchanged ``tritonclient.grpc`` and
``tritonclient.http`` against a server, answers written as comparable JSON.

Run it against the gateway and against a real Triton serving the same ONNX model, then compare::

    python scripts/conformance.py run '{"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000",
        "model": "conf", "version": "1"}' > gateway.json
    python scripts/conformance.py run '{... Triton's ports, "model": "conf__1" ...}' > triton.json
    python scripts/conformance.py compare gateway.json triton.json   # exit 1 on a disagreement

The model takes ``features`` ``[N, 4, 3, 3]`` FP32 and answers ``logits`` ``[N, 10]`` FP32
(``tests.support.tiny_models.tail_model``). Each operation's answer is normalised to what both
servers must agree on: values (to 1e-4), shapes, datatypes, and for errors the error class (the
gRPC status code, the HTTP status); names the servers choose themselves (the server's name, a
Triton model's ``__1`` suffix, its platform) are left out. ``tests/integration/cloud/
test_conformance.py`` runs this in CI. tritonclient and this repository's generated ``inference``
package cannot share a process, so this script imports tritonclient itself and nothing from the
repository.
"""

from __future__ import annotations

import json
import queue
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

SHAPE = (4, 3, 3)
INPUT, OUTPUT = "features", "logits"
_STATS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def _grpc_error(exc: Any) -> dict[str, str]:
    return {"error": str(exc.status()).removeprefix("StatusCode.")}


def _http_error(exc: Any) -> dict[str, str]:
    return {"error": f"HTTP {exc.status()}"}


def _tensor(result: Any) -> dict[str, Any]:
    arr = result.as_numpy(OUTPUT)
    out = result.get_output(OUTPUT)
    datatype = out.datatype if hasattr(out, "datatype") else out["datatype"]
    return {"shape": list(arr.shape), "datatype": datatype, "values": arr.reshape(-1).tolist()}


def _ops_grpc(url: str, model: str, version: str) -> dict[str, Any]:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    c = tc.InferenceServerClient(url)

    def inp(x: np.ndarray, name: str = INPUT, dtype: str = "FP32") -> Any:
        i = tc.InferInput(name, list(x.shape), dtype)
        i.set_data_from_numpy(x)
        return i

    def call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except InferenceServerException as exc:
            return _grpc_error(exc)

    def infer(inputs: list[Any], outputs: list[Any] | None = None, name: str = model) -> Any:
        return call(lambda: _tensor(c.infer(name, inputs, model_version=version, outputs=outputs)))

    short = inp(_x(1, 0))
    short._raw_content = short._raw_content[:-4]  # raw bytes that do not fill the shape
    typed = inp(_x(1, 0))
    typed._get_tensor().contents.fp32_contents.extend([0.0] * 36)  # raw and typed at once

    ops: dict[str, Any] = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready(model, version),
        "unknown_model_ready": call(lambda: c.is_model_ready("no_such_model")),
        "server_metadata": _server_metadata(c.get_server_metadata(as_json=True)),
        "model_metadata": _metadata(c.get_model_metadata(model, version, as_json=True)),
        "unknown_model_metadata": call(lambda: c.get_model_metadata("no_such_model")),
        "model_config": _config(c.get_model_config(model, version, as_json=True)["config"]),
        "infer_1": infer([inp(_x(1, 1))]),
        "infer_3": infer([inp(_x(3, 2))]),
        "infer_output_named": infer([inp(_x(2, 3))], [tc.InferRequestedOutput(OUTPUT)]),
        "error_unknown_model": infer([inp(_x(1, 0))], name="no_such_model"),
        "error_wrong_dtype": infer([inp(_x(1, 0).astype(np.float64), dtype="FP64")]),
        "error_wrong_shape": infer([inp(_x(1, 0)[:, :, :2])]),
        "error_unknown_input": infer([inp(_x(1, 0), name="nope")]),
        "error_unknown_output": infer([inp(_x(1, 0))], [tc.InferRequestedOutput("nope")]),
        "error_raw_size": infer([short]),
        "error_raw_and_typed": infer([typed]),
    }
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    xs = _x(3, 4)
    for i in range(3):
        c.async_stream_infer(model, [inp(xs[i : i + 1])], model_version=version, request_id=str(i))
    got: dict[str, Any] = {}
    for _ in range(3):
        r, e = results.get(timeout=60)
        got[r.get_response().id if e is None else "error"] = (
            _tensor(r) if e is None else _grpc_error(e)
        )
    c.stop_stream()
    ops["stream_3"] = [got.get(str(i)) for i in range(3)]
    stats = c.get_inference_statistics(model, version, as_json=True)["model_stats"][0]
    ops["statistics"] = _statistics(stats)
    index = c.get_model_repository_index(as_json=True).get("models", [])
    ops["repository_index"] = _index(index, model, version)
    c.close()
    return ops


def _ops_http(url: str, model: str, version: str) -> dict[str, Any]:
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    c = th.InferenceServerClient(url)

    def inp(x: np.ndarray, binary: bool = True, name: str = INPUT, dtype: str = "FP32") -> Any:
        i = th.InferInput(name, list(x.shape), dtype)
        i.set_data_from_numpy(x, binary_data=binary)
        return i

    def call(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except InferenceServerException as exc:
            return _http_error(exc)

    def infer(inputs: list[Any], outputs: list[Any] | None = None, name: str = model) -> Any:
        return call(lambda: _tensor(c.infer(name, inputs, model_version=version, outputs=outputs)))

    json_out = [th.InferRequestedOutput(OUTPUT, binary_data=False)]
    ops: dict[str, Any] = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready(model, version),
        "unknown_model_ready": call(lambda: c.is_model_ready("no_such_model")),
        "server_metadata": _server_metadata(c.get_server_metadata()),
        "model_metadata": _metadata(c.get_model_metadata(model, version)),
        "unknown_model_metadata": call(lambda: c.get_model_metadata("no_such_model")),
        "model_config": _config(c.get_model_config(model, version)),
        "infer_1": infer([inp(_x(1, 1))]),
        "infer_3": infer([inp(_x(3, 2))]),
        "infer_output_named": infer([inp(_x(2, 3))], [th.InferRequestedOutput(OUTPUT)]),
        "infer_json_in_binary_out": infer([inp(_x(2, 5), binary=False)]),
        "infer_json_in_json_out": infer([inp(_x(2, 6), binary=False)], json_out),
        "infer_binary_in_json_out": infer([inp(_x(2, 7))], json_out),
        # 64 samples: answers past any minimum size for compression
        "infer_gzip_request_deflate_response": call(
            lambda: _tensor(
                c.infer(
                    model,
                    [inp(_x(64, 9))],
                    model_version=version,
                    outputs=json_out,
                    request_compression_algorithm="gzip",
                    response_compression_algorithm="deflate",
                )
            )
        ),
        "infer_deflate_request_gzip_response": call(
            lambda: _tensor(
                c.infer(
                    model,
                    [inp(_x(64, 10), binary=False)],
                    model_version=version,
                    request_compression_algorithm="deflate",
                    response_compression_algorithm="gzip",
                )
            )
        ),
        "error_unknown_model": infer([inp(_x(1, 0))], name="no_such_model"),
        "error_wrong_dtype": infer([inp(_x(1, 0).astype(np.float64), dtype="FP64")]),
        "error_wrong_shape": infer([inp(_x(1, 0)[:, :, :2])]),
        "error_unknown_input": infer([inp(_x(1, 0), name="nope")]),
        "error_unknown_output": infer([inp(_x(1, 0))], [th.InferRequestedOutput("nope")]),
        "error_json_count": infer([_short_json(th)]),
    }
    pending = [c.async_infer(model, [inp(_x(1, 8 + i))], model_version=version) for i in range(3)]
    ops["async_3"] = [call(lambda p=p: _tensor(p.get_result())) for p in pending]
    ops["statistics"] = _statistics(c.get_inference_statistics(model, version)["model_stats"][0])
    ops["repository_index"] = _index(c.get_model_repository_index(), model, version)
    c.close()
    return ops


def _short_json(th: Any) -> Any:
    i = th.InferInput(INPUT, [1, *SHAPE], "FP32")
    i._data = [0.0] * 35  # one value short of the shape, as JSON
    i._parameters.pop("binary_data_size", None)
    return i


def _server_metadata(meta: dict[str, Any]) -> dict[str, bool]:
    return {
        "has_name": bool(meta.get("name")),
        "has_version": bool(meta.get("version")),
        "extensions_is_list": isinstance(meta.get("extensions"), list),
    }


def _tensors(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [[t["name"], t["datatype"], [int(d) for d in t["shape"]]] for t in items]


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": _tensors(meta["inputs"]), "outputs": _tensors(meta["outputs"])}


def _config(cfg: dict[str, Any]) -> dict[str, Any]:
    def dims(items: list[dict[str, Any]]) -> list[list[Any]]:
        return [[t["name"], t["data_type"], [int(d) for d in t["dims"]]] for t in items]

    return {
        "max_batch_size_positive": int(cfg.get("max_batch_size", 0)) > 0,
        "input": dims(cfg["input"]),
        "output": dims(cfg["output"]),
        "dynamic_batching": "dynamic_batching" in cfg,
    }


def _statistics(s: dict[str, Any]) -> dict[str, Any]:
    """What perf_analyzer needs to be true of the statistics after this script's requests."""
    infer = s.get("inference_stats", {})

    def count(name: str) -> int:
        return int(infer.get(name, {}).get("count", 0))

    def ns(name: str) -> int:
        return int(infer.get(name, {}).get("ns", 0))

    success = count("success")
    batches = s.get("batch_stats", [])
    return {
        "success_counted": success >= 5,
        "inference_count_at_least_success": int(s.get("inference_count", 0)) >= success,
        "executions_counted": int(s.get("execution_count", 0)) > 0,
        "timed": {name: count(name) == success and ns(name) > 0 for name in _STATS},
        # Requests refused before queueing (bad shape, dtype, names) are no failures of the model.
        "refusals_not_counted_as_failures": count("fail") == 0,
        "last_inference_set": int(s.get("last_inference", 0)) > 0,
        "batch_stats": bool(batches)
        and all(int(b["batch_size"]) > 0 and int(b["compute_infer"]["count"]) > 0 for b in batches),
    }


def _index(models: list[dict[str, Any]], model: str, version: str) -> dict[str, Any]:
    mine = [m for m in models if m.get("name") == model and m.get("version", "") == version]
    return {"listed": len(mine) == 1, "state": mine[0].get("state") if mine else None}


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Every operation through both clients against one server."""
    model, version = args["model"], str(args.get("version", ""))
    return {
        "grpc": _ops_grpc(args["grpc"], model, version),
        "http": _ops_http(args["http"], model, version),
    }


KNOWN_DIFFERENCES = {
    "/http/error_json_count/error": "Triton answers HTTP 500 to JSON data with fewer values than "
    "the shape (an internal error); the gateway answers 400, the client's error",
    "/grpc/repository_index/listed": "PyTriton's Triton lists no models in its repository index "
    "(it loads them itself); the gateway lists every served version",
    "/grpc/repository_index/state": "(the same)",
    "/http/repository_index/listed": "(the same)",
    "/http/repository_index/state": "(the same)",
}
"""Where the gateway knowingly answers otherwise than the Triton the tests start, and why."""


def compare(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where ``ours`` and ``theirs`` disagree (values to 1e-4), as readable lines; paths in
    :data:`KNOWN_DIFFERENCES` are left out."""
    if path in KNOWN_DIFFERENCES:
        return []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours or key not in theirs:
                out.append(f"{path}/{key}: only on {'ours' if key in ours else 'theirs'}")
            else:
                out += compare(ours[key], theirs[key], f"{path}/{key}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: {len(ours)} items vs {len(theirs)}"]
        if ours and all(isinstance(v, float) for v in ours + theirs):
            if np.allclose(ours, theirs, rtol=1e-4, atol=1e-4):
                return []
            return [f"{path}: values differ (max {np.max(np.abs(np.subtract(ours, theirs)))})"]
        return [
            line
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for line in compare(a, b, f"{path}[{i}]")
        ]
    if ours != theirs:
        return [f"{path}: {ours!r} vs {theirs!r}"]
    return []


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "run":
        print(json.dumps(run(json.loads(argv[1]))))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        with open(argv[1]) as a, open(argv[2]) as b:
            diffs = compare(json.load(a), json.load(b))
        print("\n".join(diffs) or "the servers agree")
        return 1 if diffs else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
