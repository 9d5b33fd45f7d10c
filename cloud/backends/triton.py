"""Triton backend: forwards batches to a Triton Inference Server over gRPC.

It speaks KServe-v2 gRPC through this repository's wire-compatible ``inference`` stubs (grpc.aio)
rather than ``tritonclient``: tritonclient ships its own generated copy of the same
``grpc_service.proto`` and both cannot be imported in one process (duplicate protobuf symbols in
the default descriptor pool), and the gateway already imports ours to serve the protocol.

Errors map to :mod:`common.errors`: an unreachable or dying server is ``Unavailable`` (every
call carries a deadline, so nothing hangs), a model Triton does not serve is ``NotFound``,
rejected inputs are ``InvalidArgument``. The channel reconnects with a short backoff so that a
restarted Triton serves again within about a second.

Triton names allow ``[A-Za-z0-9._-]`` and integer versions; our versions are strings. By default
every version ``v`` of model ``name`` is addressed as its own Triton model ``<name>__<v>``,
version 1 (:func:`triton_model_ref`; how ``scripts/triton`` serves them): PyTriton cannot serve
two versions of one model name (the second version's python-backend tensor store fails to start
with an ``EOFError``). With ``version_suffix=False`` (a Triton with its own model repository), a
numeric version maps to that Triton version of ``name``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud._settings import TritonSettings
from cloud.core import Backend, ModelKey, ModelSpec
from common import dtypes
from common.errors import (
    AimlError,
    ErrorCode,
    Internal,
    InvalidArgument,
    NotFound,
    error_from_code,
)

log = logging.getLogger(__name__)

# Triton's status says what went wrong between the gateway and Triton: a dropped, cancelled or
# unexplained call is UNAVAILABLE (retry), these pass on, anything else is the gateway's INTERNAL.
_RETRY = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)
_PASSED_ON = frozenset(
    {
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.NOT_FOUND,
        ErrorCode.RESOURCE_EXHAUSTED,
        ErrorCode.UNAVAILABLE,
    }
)


_BAD = re.compile(r"[^A-Za-z0-9._-]")


def triton_model_ref(key: ModelKey, version_suffix: bool = True) -> tuple[str, str]:
    """Triton (model name, version string) serving our ``key`` (see the module docstring)."""
    name = _BAD.sub("_", key.name)
    if not version_suffix and key.version.isdigit() and int(key.version) > 0:
        return name, str(int(key.version))
    return f"{name}__{_BAD.sub('_', key.version)}", "1"


def _error(exc: grpc.aio.AioRpcError, what: str) -> AimlError:
    status = exc.code()
    code = ErrorCode.UNAVAILABLE if status in _RETRY else ErrorCode.from_name(status.name)
    if code not in _PASSED_ON:
        code = ErrorCode.INTERNAL
    return error_from_code(code, f"Triton {what}: {status.name}: {exc.details()}")


class TritonBackend(Backend):
    """Runs model versions served by a Triton Inference Server (see module docstring)."""

    def __init__(self, settings: TritonSettings | None = None) -> None:
        self._settings = settings or TritonSettings()
        limit = self._settings.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            self._settings.url,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
            ],
        )
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._models: dict[ModelKey, ModelSpec] = {}

    async def load(self, model: ModelSpec) -> None:
        """Check that Triton serves ``model`` (Triton loads it; we only map and verify)."""
        name, version = triton_model_ref(model.key, self._settings.version_suffix)
        try:
            ready = await self._stub.ModelReady(
                pb.ModelReadyRequest(name=name, version=version),
                timeout=self._settings.control_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, f"ModelReady({name}/{version})") from exc
        if not ready.ready:
            raise NotFound(
                f"Triton at {self._settings.url} does not serve {name} version {version} (for {model.key})"
            )
        self._models[model.key] = model

    async def unload(self, key: ModelKey) -> None:
        self._models.pop(key, None)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        spec = self._models.get(key)
        if spec is None:
            raise NotFound(f"model {key} is not loaded on the Triton backend")
        name, version = triton_model_ref(key, self._settings.version_suffix)
        request = pb.ModelInferRequest(model_name=name, model_version=version)
        for tname, array in inputs.items():
            arr = np.ascontiguousarray(array)
            try:
                datatype = dtypes.lookup(arr.dtype).v2
            except InvalidArgument:
                raise InvalidArgument(
                    f"input {tname!r}: dtype {arr.dtype} is not supported by Triton"
                ) from None
            request.inputs.add(name=tname, datatype=datatype, shape=arr.shape)
            request.raw_input_contents.append(
                arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            )
        wanted = list(outputs) or [t.name for t in spec.outputs]
        for oname in wanted:
            request.outputs.add(name=oname)
        try:
            response = await self._stub.ModelInfer(request, timeout=self._settings.infer_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, f"ModelInfer({name}/{version})") from exc
        return _decode_outputs(response)

    async def ready(self) -> bool:
        try:
            res = await self._stub.ServerReady(
                pb.ServerReadyRequest(), timeout=self._settings.control_timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(res.ready)

    async def close(self) -> None:
        self._models.clear()
        await self._channel.close()


def _decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    if len(response.raw_output_contents) != len(response.outputs):
        raise Internal("Triton answered without raw output contents")
    out: dict[str, np.ndarray] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        try:
            row = dtypes.by_v2(tensor.datatype)
        except InvalidArgument:
            raise Internal(
                f"Triton output {tensor.name!r} has unsupported datatype {tensor.datatype}"
            ) from None
        dtype, dtype_name = row.numpy, row.name
        shape = tuple(int(d) for d in tensor.shape)
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise Internal(
                f"Triton output {tensor.name!r}: {len(raw)} bytes do not match shape {shape}"
            )
        out[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype_name)
    return out


__all__ = ["TritonBackend", "TritonSettings", "triton_model_ref"]
