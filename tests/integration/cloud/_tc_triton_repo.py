"""Child-process tritonclient driver for a Triton-layout model repository served by the gateway.

argv[1]: JSON {"url", "model", "x" (.npy path, float32 [N,3,48,W]), "y" (.npy path written)}.
Prints JSON with readiness
per version, the metadata's versions, the model config as tritonclient reads it, the output of
ModelInfer with ``model_version="1"`` and the error strings of versions the gateway does not serve.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


def main() -> None:
    args = json.loads(sys.argv[1])
    url, model = args["url"], args["model"]
    x = np.load(args["x"])
    c = tc.InferenceServerClient(url)
    out: dict = {
        "ready": {v: c.is_model_ready(model, v) for v in ("1", "2", "3")},
        "versions": list(c.get_model_metadata(model, "1").versions),
    }
    cfg = c.get_model_config(model, "1").config
    out["config"] = {
        "name": cfg.name,
        "platform": cfg.platform,
        "max_batch_size": cfg.max_batch_size,
        "delay_us": cfg.dynamic_batching.max_queue_delay_microseconds,
        "policy": cfg.version_policy.WhichOneof("policy_choice"),
        "inputs": [(i.name, list(i.dims)) for i in cfg.input],
    }
    i = tc.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    r = c.infer(model, [i], model_version="1")
    out["model_version"] = r.get_response().model_version
    np.save(args["y"], r.as_numpy("fetch_name_0"))
    out["index"] = [(m.name, m.version, m.state) for m in c.get_model_repository_index().models]
    errors = {}
    for v in ("3", "v1"):
        try:
            c.infer(model, [i], model_version=v)
            errors[v] = "no error"
        except InferenceServerException as exc:
            errors[v] = f"{exc.status()} {exc.message()}"
    out["errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main()
