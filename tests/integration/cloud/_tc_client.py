"""Child-process tritonclient driver (tritonclient cannot share a process with our stubs).

argv[1]: JSON {"url": ..., "model": ..., "seed": int, "n": int} (x = default_rng(seed).random((n,1,28,28))). Prints JSON with the
logits from ModelInfer (sync and aio), ModelStreamInfer (sync and aio), 64 concurrent aio requests
and error strings for bad requests.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys

import numpy as np
import tritonclient.grpc as tc
import tritonclient.grpc.aio as tca
from tritonclient.utils import InferenceServerException


def _input(mod, x: np.ndarray, name: str = "input", dtype: str = "FP32"):  # type: ignore[no-untyped-def]
    i = mod.InferInput(name, list(x.shape), dtype)
    i.set_data_from_numpy(x)
    return i


def main() -> None:
    args = json.loads(sys.argv[1])
    url, model = args["url"], args["model"]
    x = np.random.default_rng(args["seed"]).random((args["n"], 1, 28, 28), dtype=np.float32)
    out: dict = {}
    c = tc.InferenceServerClient(url)
    out["ready"] = c.is_server_ready() and c.is_model_ready(model)
    out["metadata_inputs"] = [i.name for i in c.get_model_metadata(model).inputs]
    out["infer"] = c.infer(model, [_input(tc, x[:1])]).as_numpy("logits").tolist()
    out["infer_batch"] = c.infer(model, [_input(tc, x)]).as_numpy("logits").tolist()
    errors = {}
    for name, inputs in {
        "unknown_model": ("nope", [_input(tc, x[:1])]),
        "wrong_dtype": (model, [_input(tc, x[:1].astype(np.float64), dtype="FP64")]),
        "wrong_shape": (model, [_input(tc, x[:1, :, :27])]),
    }.items():
        try:
            c.infer(inputs[0], inputs[1])
            errors[name] = "no error"
        except InferenceServerException as exc:
            errors[name] = f"{exc.status()} {exc.message()}"
    # raw contents that do not match the declared shape
    bad = tc.InferInput("input", [1, 1, 28, 28], "FP32")
    bad.set_data_from_numpy(x[:1])
    bad._raw_content = bad._raw_content[:-4]
    try:
        c.infer(model, [bad])
        errors["raw_size"] = "no error"
    except InferenceServerException as exc:
        errors["raw_size"] = f"{exc.status()} {exc.message()}"
    out["errors"] = errors

    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    for i in range(len(x)):
        c.async_stream_infer(model, [_input(tc, x[i : i + 1])], request_id=str(i))
    got = {}
    for _ in range(len(x)):
        r, e = results.get(timeout=30)
        assert e is None, e
        got[int(r.get_response().id)] = r.as_numpy("logits")[0].tolist()
    c.stop_stream()
    out["stream"] = [got[i] for i in range(len(x))]

    async def aio() -> None:
        a = tca.InferenceServerClient(url)
        xs = [x[i % len(x)][None] for i in range(64)]
        rs = await asyncio.gather(*[a.infer(model, [_input(tca, xi)]) for xi in xs])
        out["aio64"] = [r.as_numpy("logits")[0].tolist() for r in rs]

        async def reqs():  # type: ignore[no-untyped-def]
            for i in range(len(x)):
                yield {
                    "model_name": model,
                    "inputs": [_input(tca, x[i : i + 1])],
                    "request_id": str(i),
                }

        sgot = {}
        async for r, e in a.stream_infer(reqs()):
            assert e is None, e
            sgot[int(r.get_response().id)] = r.as_numpy("logits")[0].tolist()
            if len(sgot) == len(x):
                break
        out["aio_stream"] = [sgot[i] for i in range(len(x))]
        stats = await a.get_inference_statistics(model)
        s = stats.model_stats[0]
        out["stats"] = {"inference_count": s.inference_count, "execution_count": s.execution_count}
        await a.close()

    asyncio.run(aio())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
