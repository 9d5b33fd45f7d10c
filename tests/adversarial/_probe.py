"""The legitimate device: a child process that keeps asking the gateway and reports every answer.

``python -m tests.adversarial._probe --port P --pki DIR --device probe [--mode session|infer]``
opens one mTLS session (or uses ModelInfer), takes its first answer as the reference, then sends
after 20 warm-up requests one request every ``--interval-ms`` and prints one line per request to stdout:
``<monotonic send time> <latency s> <1 if the answer equals the reference else 0>``. ``READY``
is printed once the reference is known. It runs in its own process so that an attack driven from
the test process competes with it only as another device would (through the gateway).
CLOCK_MONOTONIC is system-wide, so the test compares these times with its own.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from aiml021.session.v1 import session_pb2, session_pb2_grpc
from inference import grpc_service_pb2, grpc_service_pb2_grpc

from tests.adversarial._frames import IMAGE_SHAPE, MODEL, header, hello, image


def credentials(pki: Path, device: str) -> grpc.ChannelCredentials:
    """mTLS client credentials of ``device`` from a ``write_dev_pki`` directory."""
    return grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{device}.key").read_bytes(),
        certificate_chain=(pki / f"{device}.pem").read_bytes(),
    )


class _SessionAsker:
    def __init__(self, channel: grpc.Channel, device: str) -> None:
        self._out: queue.Queue[session_pb2.ConnectRequest] = queue.Queue()
        self._out.put(hello(device))
        self._answers = session_pb2_grpc.SessionServiceStub(channel).Connect(self._frames())
        self._n = 0
        self._payload = image().tobytes()

    def _frames(self) -> Iterator[session_pb2.ConnectRequest]:
        while True:
            yield self._out.get()

    def ask(self) -> bytes:
        self._n += 1
        rid = f"p{self._n}"
        self._out.put(header(rid, payload=self._payload))
        for msg in self._answers:
            kind = msg.WhichOneof("frame")
            if kind == "infer_result" and msg.infer_result.request_id == rid:
                return msg.infer_result.outputs[0].contents
            if kind == "infer_error" and msg.infer_error.request_id == rid:
                raise RuntimeError(msg.infer_error.status.message)
        raise RuntimeError("session ended")


class _InferAsker:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = grpc_service_pb2.ModelInferRequest(model_name=MODEL)
        req.inputs.add(name="input", datatype="FP32", shape=IMAGE_SHAPE)
        req.raw_input_contents.append(image().tobytes())
        self._req = req

    def ask(self) -> bytes:
        return bytes(self._stub.ModelInfer(self._req, timeout=10).raw_output_contents[0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--device", default="probe")
    p.add_argument("--mode", choices=["session", "infer"], default="session")
    p.add_argument("--interval-ms", type=float, default=20.0)
    a = p.parse_args(argv)
    channel = grpc.secure_channel(f"127.0.0.1:{a.port}", credentials(a.pki, a.device))
    asker = _SessionAsker(channel, a.device) if a.mode == "session" else _InferAsker(channel)
    reference = np.frombuffer(asker.ask(), np.float32)
    for _ in range(20):  # warm up (first batches, TLS session, allocator) before measuring
        asker.ask()
    print("READY", flush=True)
    while True:
        t0 = time.monotonic()
        try:
            ok = np.allclose(np.frombuffer(asker.ask(), np.float32), reference, atol=1e-5)
        except (grpc.RpcError, RuntimeError) as exc:  # an error is not the reference answer
            print(f"# {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            ok = False
            if a.mode == "session":
                asker = _SessionAsker(channel, a.device)  # the stream may have ended: a new one
        t1 = time.monotonic()
        print(f"{t0:.6f} {t1 - t0:.6f} {int(ok)}", flush=True)
        time.sleep(max(0.0, a.interval_ms / 1000 - (t1 - t0)))


if __name__ == "__main__":
    main()
