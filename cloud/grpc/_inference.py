"""inference.GRPCInferenceService (Triton/KServe-v2) over the data plane: thin methods."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator

import grpc
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud.core import DataPlane, DeviceCall, DeviceQuotas, InferenceResult, current_principal
from cloud.grpc._converters import infer_request_bytes, infer_request_from_pb, infer_response_to_pb
from cloud.grpc._errors import bounded, detach, handle_unary
from cloud.grpc._peer import device_id_from_context, traceparent_from_context
from cloud.grpc._triton_converters import (
    SERVER_NAME,
    SERVER_VERSION,
    model_config_to_pb,
    model_metadata_to_pb,
    repository_index,
    served_key,
    statistics_response,
)
from common.errors import AimlError, Internal, Unavailable

log = logging.getLogger(__name__)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe-v2 gRPC service; tritonclient works against it unchanged. Every ModelInfer and
    every ModelStreamInfer request of a device is a call on its quotas (``quotas``, shared with
    its sessions: :meth:`cloud.core.DeviceQuotas.call`), counted before it is decoded."""

    def __init__(
        self,
        dataplane: DataPlane,
        max_request_id_bytes: int = 256,
        quotas: DeviceQuotas | None = None,
    ) -> None:
        self._dp = dataplane
        self._max_id = max_request_id_bytes
        self._quotas = quotas or DeviceQuotas.unlimited()

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: object
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: object
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._dp.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: object
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: object
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_repository", "statistics"]
        )

    @handle_unary
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: object
    ) -> pb.ModelMetadataResponse:
        spec = self._dp.repository.resolve(request.name, request.version)
        return model_metadata_to_pb(spec, self._dp.repository.versions(spec.name))

    @handle_unary
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: object
    ) -> pb.ModelConfigResponse:
        spec = self._dp.repository.resolve(request.name, request.version)
        return pb.ModelConfigResponse(config=model_config_to_pb(spec))

    @handle_unary
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: object
    ) -> pb.ModelStatisticsResponse:
        return statistics_response(self._dp, request.name, request.version)

    @handle_unary
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: object
    ) -> pb.RepositoryIndexResponse:
        return repository_index(self._dp, request.ready)

    @handle_unary
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: object
    ) -> pb.RepositoryModelLoadResponse:
        # Models come from the models directory at start-up: Load serves an unloaded one again
        # (a served one stays as it is); a name never served is NotFound.
        await self._dp.reload(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @handle_unary
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: object
    ) -> pb.RepositoryModelUnloadResponse:
        for version in self._dp.repository.versions(request.model_name):
            await self._dp.unload(self._dp.repository.resolve(request.model_name, version).key)
        return pb.RepositoryModelUnloadResponse()

    def _failed(self, msg: pb.ModelInferRequest, started_ns: int) -> None:
        key = served_key(self._dp, msg.model_name, msg.model_version)
        if key is not None:
            self._dp.statistics.failed(key, started_ns)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        start = time.monotonic_ns()
        req = None
        accepted = False
        holder = current_principal().device_id  # whose quotas the call draws on
        try:
            call = await self._quotas.enter_call(holder, infer_request_bytes(request))
            with call:  # counted before decoding
                req = infer_request_from_pb(
                    request, "infer", context.time_remaining(), self._max_id
                )
                req.device_id = device_id_from_context(context)  # compute is shared by device
                req.traceparent = traceparent_from_context(context)
                fut = self._dp.submit(req)
                accepted = True
                result = await fut
        except AimlError as exc:
            if accepted:  # as Triton: requests refused before queueing are no failures of a model
                self._failed(request, start)
            self._record(req, request, exc.code.value)
            status, message = detach(exc)
        else:
            self._dp.statistics.finished(result, start)
            self._dp.record(req, "OK", result)
            return infer_response_to_pb(result, request.id)
        del req, request  # the request's bytes go now, not with the aborted call
        await context.abort(status, message)
        raise AssertionError("unreachable: abort raises")

    def _record(self, req: object, msg: pb.ModelInferRequest, status: str) -> None:
        from cloud.core import InferenceRequest

        if not isinstance(req, InferenceRequest):
            req = InferenceRequest(msg.model_name, msg.model_version, {}, api="infer")
        self._dp.record(req, status)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Future[InferenceResult]] = set()
        gauge = self._dp.metrics.open_streams.labels("infer_stream")
        gauge.inc()

        def deliver(
            fut: asyncio.Future[InferenceResult],
            msg: pb.ModelInferRequest,
            req: object,
            started_ns: int,
            call: DeviceCall,
        ) -> None:
            pending.discard(fut)
            call.leave()
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                result = fut.result()
                self._dp.statistics.finished(result, started_ns)
                self._dp.record(req, "OK", result)  # type: ignore[arg-type]
                out.put_nowait(
                    pb.ModelStreamInferResponse(infer_response=infer_response_to_pb(result, msg.id))
                )
            else:
                err = exc if isinstance(exc, AimlError) else Internal(str(exc))
                self._failed(msg, started_ns)
                self._record(req, msg, err.code.value)
                out.put_nowait(_stream_error(err, msg, self._max_id))
            if eof and not pending:
                out.put_nowait(None)

        eof = False
        device = device_id_from_context(context)
        holder = current_principal().device_id  # whose quotas each request draws on
        parent = traceparent_from_context(context)  # the stream's: every request continues it

        async def read() -> None:
            nonlocal eof
            try:
                async for msg in request_iterator:
                    req = None
                    started_ns = time.monotonic_ns()
                    call: DeviceCall | None = None
                    try:  # each request is a call on the device's quotas, counted before decoding
                        call = await self._quotas.enter_call(holder, infer_request_bytes(msg))
                        req = infer_request_from_pb(msg, "stream", None, self._max_id)
                        req.device_id = device
                        req.traceparent = parent
                        fut = self._dp.submit(req)
                    except BaseException as exc:
                        if call is not None:  # counted, then refused: returned at once
                            call.leave()
                        if not isinstance(exc, AimlError):
                            raise
                        self._record(req, msg, exc.code.value)
                        out.put_nowait(_stream_error(exc, msg, self._max_id))
                        continue
                    pending.add(fut)  # the call is left when the answer is delivered
                    fut.add_done_callback(
                        functools.partial(
                            deliver, msg=msg, req=req, started_ns=started_ns, call=call
                        )
                    )
            except Exception as exc:  # the call ended (aborted on a malformed message, or reset)
                log.debug("ModelStreamInfer read ended: %s", type(exc).__name__)
            finally:
                eof = True
                if not pending:
                    out.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                yield item
        finally:
            gauge.dec()
            reader.cancel()
            for fut in list(pending):
                fut.cancel()


def _stream_error(
    err: AimlError, msg: pb.ModelInferRequest, max_id: int
) -> pb.ModelStreamInferResponse:
    # Names and ids are echoed so the client can match the error, unless over the id limit
    # (the error is that they are too long).
    ok_id = len(msg.id.encode()) <= max_id
    return pb.ModelStreamInferResponse(
        error_message=f"{err.code.value}: {bounded(err.message)}",
        infer_response=pb.ModelInferResponse(
            model_name=msg.model_name if ok_id else "",
            model_version=msg.model_version if ok_id else "",
            id=msg.id if ok_id else "",
        ),
    )


__all__ = ["SERVER_NAME", "SERVER_VERSION", "InferenceServicer", "Unavailable"]
