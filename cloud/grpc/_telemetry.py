"""Device telemetry: TelemetryBatch -> core events, and aiml021.telemetry.v1.TelemetryService.

Batches arriving on a session stream and ``TelemetryService.Report`` calls go through the same
path (:meth:`cloud.core.DataPlane.record_telemetry`): metrics and the telemetry sink, never
blocking. The device id is the verified certificate's (or, under ``--insecure``, the batch's).
"""

from __future__ import annotations

import grpc
from aiml021.common.v1 import request_pb2
from aiml021.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc

from cloud.core import DataPlane, TelemetryEvent
from cloud.core._fleet import DeviceReport
from cloud.grpc._errors import handle_unary
from cloud.grpc._peer import device_id_from_context
from common.prototime import duration_to_s

SERVICE = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name
_ROUTES = {
    v.number: v.name.removeprefix("ROUTE_").lower() for v in request_pb2.Route.DESCRIPTOR.values
}


def events_from_pb(
    batch: telemetry_pb2.TelemetryBatch, device_id: str, session_id: str = ""
) -> list[TelemetryEvent]:
    """Core events of a batch, attributed to ``device_id`` (never the batch's own field)."""
    events = []
    for e in batch.events:
        total = e.timing.total if e.HasField("timing") and e.timing.HasField("total") else None
        events.append(
            TelemetryEvent(
                device_id=device_id,
                request_id=e.request_id,
                model_name=e.model_name,
                route=_ROUTES.get(e.route, "unspecified"),
                exit_index=e.exit_index,
                total_s=None if total is None else duration_to_s(total),
                bytes_sent=e.bytes_sent,
                bytes_received=e.bytes_received,
                cache_hit=e.cache_hit,
                cut_point=e.cut_point,
                codec=e.codec,
                confidence=e.confidence,
                session_id=session_id,
                region=batch.region,
                device_class=batch.device_class,
            )
        )
    return events


def device_report_from_pb(batch: telemetry_pb2.TelemetryBatch, device_id: str) -> DeviceReport:
    """What a batch says about its device, attributed to ``device_id``."""
    return DeviceReport(
        device_id=device_id,
        region=batch.region,
        device_class=batch.device_class,
        replay_backlog=int(batch.replay_backlog),
    )


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    """TelemetryService.Report for devices without a session stream."""

    def __init__(self, dataplane: DataPlane, insecure: bool) -> None:
        self._dp = dataplane
        self._insecure = insecure

    @handle_unary
    async def Report(
        self, request: telemetry_pb2.ReportRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.ReportResponse:
        device = device_id_from_context(context)
        if not device:
            device = request.batch.device_id or "anonymous"
        n = self._dp.record_telemetry(
            events_from_pb(request.batch, device), int(request.batch.dropped)
        )
        self._dp.report_device(device_report_from_pb(request.batch, device))
        return telemetry_pb2.ReportResponse(accepted=n)


__all__ = ["SERVICE", "TelemetryServicer", "device_report_from_pb", "events_from_pb"]
