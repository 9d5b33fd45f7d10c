"""Child-process tritonclient driver for a served pipeline (tritonclient cannot share a process
with our stubs).

argv[1]: JSON {"url": ..., "model": ..., "jpeg": path}. Sends the JPEG as a BYTES tensor of one
element (``np.array([jpeg], dtype=object)``) over gRPC and prints the ``lines`` output's JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tc


def main() -> None:
    args = json.loads(sys.argv[1])
    with open(args["jpeg"], "rb") as f:
        jpeg = f.read()
    inp = tc.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=object))
    client = tc.InferenceServerClient(args["url"])
    result = client.infer(args["model"], [inp], outputs=[tc.InferRequestedOutput("lines")])
    print(json.dumps(json.loads(result.as_numpy("lines").tobytes())))


if __name__ == "__main__":
    main()
