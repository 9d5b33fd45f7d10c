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
from inference import model_config_pb2 as mc

from cloud.core import DataPlane, InferenceResult
from cloud.grpc._converters import infer_request_from_pb, infer_response_to_pb, tensor_metadata
from cloud.grpc._errors import bounded, detach, handle_unary
from cloud.grpc._peer import device_id_from_context
from common import dtypes
from common.errors import AimlError, Internal, Unavailable

log = logging.getLogger(__name__)

SERVER_NAME = "aiml021-gateway"
SERVER_VERSION = "0.1.0"


class _Stats:
    """Per-model counters for ModelStatistics."""

    __slots__ = ("executions", "fail", "fail_ns", "inferences", "last", "queue_ns", "success_ns")

    def __init__(self) -> None:
        self.inferences = self.executions = self.fail = 0
        self.success_ns = self.fail_ns = self.queue_ns = self.last = 0


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe-v2 gRPC service; tritonclient works against it unchanged."""

    def __init__(self, dataplane: DataPlane, max_request_id_bytes: int = 256) -> None:
        self._dp = dataplane
        self._max_id = max_request_id_bytes
        self._stats: dict[tuple[str, str], _Stats] = {}

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
        return pb.ModelMetadataResponse(
            name=spec.name,
            versions=self._dp.repository.versions(spec.name),
            platform="onnxruntime_onnx",
            inputs=tensor_metadata(spec.inputs),
            outputs=tensor_metadata(spec.outputs),
        )

    @handle_unary
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: object
    ) -> pb.ModelConfigResponse:
        spec = self._dp.repository.resolve(request.name, request.version)
        if spec.model_config:  # a Triton repository's config.pbtxt, as loaded
            return pb.ModelConfigResponse(config=mc.ModelConfig.FromString(spec.model_config))
        cfg = mc.ModelConfig(
            name=spec.name, platform="onnxruntime_onnx", max_batch_size=spec.max_batch_size
        )
        for t, target in ((spec.inputs, cfg.input), (spec.outputs, cfg.output)):
            for m in tensor_metadata(t):
                data_type = mc.DataType.Value(dtypes.by_v2(m.datatype).triton_config)
                target.add(name=m.name, data_type=data_type, dims=m.shape[1:])
        cfg.dynamic_batching.SetInParent()
        return pb.ModelConfigResponse(config=cfg)

    @handle_unary
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: object
    ) -> pb.ModelStatisticsResponse:
        resp = pb.ModelStatisticsResponse()
        for spec in self._dp.repository.specs():
            if request.name and spec.name != request.name:
                continue
            if request.version and spec.version != request.version:
                continue
            st = self._stats.get((spec.name, spec.version), _Stats())
            batcher = self._dp.batcher(spec.key)
            m = resp.model_stats.add(
                name=spec.name,
                version=spec.version,
                last_inference=st.last,
                inference_count=batcher.samples,
                execution_count=batcher.batches,
            )
            m.inference_stats.success.count = st.inferences
            m.inference_stats.success.ns = st.success_ns
            m.inference_stats.fail.count = st.fail
            m.inference_stats.fail.ns = st.fail_ns
            m.inference_stats.queue.count = st.inferences
            m.inference_stats.queue.ns = st.queue_ns
        if request.name and not resp.model_stats:
            self._dp.repository.resolve(request.name, request.version)  # NotFound
        return resp

    @handle_unary
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: object
    ) -> pb.RepositoryIndexResponse:
        resp = pb.RepositoryIndexResponse()
        for spec in self._dp.repository.specs():
            ready = self._dp.model_ready(spec.name, spec.version)
            if request.ready and not ready:
                continue
            resp.models.add(
                name=spec.name, version=spec.version, state="READY" if ready else "UNAVAILABLE"
            )
        if not request.ready:  # unloaded models stay listed, as Triton lists them
            for spec in self._dp.unloaded():
                resp.models.add(
                    name=spec.name, version=spec.version, state="UNAVAILABLE", reason="unloaded"
                )
        return resp

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

    def _count(self, result: InferenceResult | None, key: tuple[str, str], start: int) -> None:
        st = self._stats.get(key)
        if st is None:
            if result is None and not self._dp.model_ready(*key):
                return  # failures of names a client made up are not statistics of a model
            st = self._stats[key] = _Stats()
        now = time.time_ns()
        if result is None:
            st.fail += 1
            st.fail_ns += now - start
            return
        st.inferences += 1
        st.success_ns += now - start
        st.queue_ns += int(result.queue_s * 1e9)
        st.last = now // 1_000_000

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        start = time.time_ns()
        key = (request.model_name, request.model_version)
        req = None
        try:
            req = infer_request_from_pb(request, "infer", context.time_remaining(), self._max_id)
            req.device_id = device_id_from_context(context)  # compute is shared fairly by device
            result = await self._dp.submit(req)
        except AimlError as exc:
            self._count(None, key, start)
            self._record(req, request, exc.code.value)
            status, message = detach(exc)
        else:
            self._count(result, (result.model_name, result.model_version), start)
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
            fut: asyncio.Future[InferenceResult], msg: pb.ModelInferRequest, req: object
        ) -> None:
            pending.discard(fut)
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                result = fut.result()
                self._dp.record(req, "OK", result)  # type: ignore[arg-type]
                out.put_nowait(
                    pb.ModelStreamInferResponse(infer_response=infer_response_to_pb(result, msg.id))
                )
            else:
                err = exc if isinstance(exc, AimlError) else Internal(str(exc))
                self._record(req, msg, err.code.value)
                out.put_nowait(_stream_error(err, msg, self._max_id))
            if eof and not pending:
                out.put_nowait(None)

        eof = False
        device = device_id_from_context(context)

        async def read() -> None:
            nonlocal eof
            try:
                async for msg in request_iterator:
                    req = None
                    try:
                        req = infer_request_from_pb(msg, "stream", None, self._max_id)
                        req.device_id = device
                        fut = self._dp.submit(req)
                    except AimlError as exc:
                        self._record(req, msg, exc.code.value)
                        out.put_nowait(_stream_error(exc, msg, self._max_id))
                        continue
                    pending.add(fut)
                    fut.add_done_callback(functools.partial(deliver, msg=msg, req=req))
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
