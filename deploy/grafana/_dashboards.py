"""The aiml021 dashboards, one function each. Queries use the gateway's metrics
(cloud/_metrics.py) and, where a panel says so, series recorded by deploy/prometheus/rules.
The exporter has labels for model, route, device class, codec and status; there is no region
label yet, so no dashboard offers a region drill-down."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from ._panels import Layout, dashboard, label_variable, row, stat, timeseries

RATE = "[$__rate_interval]"
M = 'model=~"$model"'


def _quantiles(metric: str, by: str, where: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({selector}{RATE})))",
            " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",")) + f" p{round(q * 100)}",
        )
        for q in qs
    ]


def gateway() -> Dashboard:
    """Throughput, errors, latency against the SLA, batching and utilisation, streams."""
    lay = Layout()
    req = "aiml021_gateway_requests_total"
    return (
        dashboard(
            "aiml021-gateway",
            "aiml021 / Gateway",
            "Requests, errors, latency against the SLA target, batching and backend "
            "utilisation of the aiml021 gateways (docs/observability.md).",
            ["gateway"],
        )
        .with_variable(label_variable("model", "Model", req))
        .with_row(row(lay, "Traffic"))
        .with_panel(
            stat(
                lay,
                "Requests / s",
                "Finished requests of the selected models.",
                "reqps",
                f"sum(rate({req}{{{M}}}{RATE}))",
            )
        )
        .with_panel(
            stat(
                lay,
                "Server-side errors",
                "Share of requests that ended in a status the service owes (recording rule "
                "model:aiml021_gateway_request_errors:rate5m; the alert fires over 1%).",
                "percentunit",
                f"sum(model:aiml021_gateway_request_errors:rate5m{{{M}}}) "
                f"/ sum(model:aiml021_gateway_requests:rate5m{{{M}}})",
            )
        )
        .with_panel(
            stat(
                lay,
                "Capacity rejections / s",
                "RESOURCE_EXHAUSTED: batcher queue, buffers or credits full.",
                "reqps",
                f'sum(rate(aiml021_gateway_rejections_total{{reason="RESOURCE_EXHAUSTED"}}{RATE}))',
            )
        )
        .with_panel(
            stat(
                lay,
                "Open device sessions",
                "Session streams open over all gateways.",
                "short",
                'sum(aiml021_gateway_open_streams{kind="session"})',
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Requests by model and status",
                "Finished requests per second.",
                "reqps",
                (f"sum by (model, status) (rate({req}{{{M}}}{RATE}))", "{{model}} {{status}}"),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Rejections by reason",
                "Requests refused before compute, by status code.",
                "reqps",
                (f"sum by (reason) (rate(aiml021_gateway_rejections_total{RATE}))", "{{reason}}"),
            )
        )
        .with_row(row(lay, "Latency"))
        .with_panel(
            timeseries(
                lay,
                "Gateway p95 against the SLA target",
                "p95 queue wait + p95 batch compute and the model's target (recording "
                "rules; targets in deploy/prometheus/rules/aiml021-sla.rules.yml).",
                "s",
                (f"model:aiml021_gateway_queue_compute_seconds:p95_5m{{{M}}}", "{{model}} p95"),
                (
                    f"model:aiml021_sla_p95_latency_target_seconds:effective{{{M}}}",
                    "{{model}} target",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Batcher queue wait",
                "Time requests wait for a batch.",
                "s",
                *_quantiles("aiml021_gateway_queue_seconds", "model", M, (0.5, 0.95, 0.99)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Batch compute time",
                "Backend time per batch; every request in a batch waits for all of it.",
                "s",
                *_quantiles("aiml021_gateway_compute_seconds", "model", M, (0.5, 0.95)),
            )
        )
        .with_row(row(lay, "Batching and utilisation"))
        .with_panel(
            timeseries(
                lay,
                "Batches / s",
                "Batches executed per second.",
                "ops",
                (
                    f"sum by (model) (rate(aiml021_gateway_batch_size_count{{{M}}}{RATE}))",
                    "{{model}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Mean batch size",
                "Samples per executed batch.",
                "short",
                (
                    f"sum by (model) (rate(aiml021_gateway_batch_size_sum{{{M}}}{RATE})) "
                    f"/ sum by (model) (rate(aiml021_gateway_batch_size_count{{{M}}}{RATE}))",
                    "{{model}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Backend utilisation",
                "Compute seconds per second: 100% = one batch computing all the time "
                "(batching.workers batches may compute at once).",
                "percentunit",
                (
                    f"sum by (model) (rate(aiml021_gateway_compute_seconds_sum{{{M}}}{RATE}))",
                    "{{model}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Payload bytes received by codec",
                "Session payload bytes after reassembly.",
                "Bps",
                (f"sum by (codec) (rate(aiml021_gateway_bytes_received_total{RATE}))", "{{codec}}"),
            )
        )
        .with_row(row(lay, "Streams and buffers"))
        .with_panel(
            timeseries(
                lay,
                "Open streams",
                "Session and ModelStreamInfer streams.",
                "short",
                ("sum by (kind) (aiml021_gateway_open_streams)", "{{kind}}"),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Buffered session bytes",
                "Unfinished payloads held in memory (session.global_buffer_bytes caps it).",
                "bytes",
                ("sum by (instance) (aiml021_gateway_buffered_bytes)", "{{instance}}"),
            )
        )
    )


def cache() -> Dashboard:
    """Result cache hits and idempotency outcomes."""
    lay = Layout()
    rc = "aiml021_gateway_result_cache_total"
    idem = "aiml021_gateway_idempotency_total"
    return (
        dashboard(
            "aiml021-cache",
            "aiml021 / Cache and idempotency",
            "Result cache hit ratios and how requests with an idempotency key were answered.",
            ["gateway", "cache"],
        )
        .with_variable(label_variable("model", "Model", rc))
        .with_row(row(lay, "Result cache"))
        .with_panel(
            stat(
                lay,
                "Cache hit ratio",
                "Hits per lookup, selected models.",
                "percentunit",
                f'sum(rate({rc}{{{M},result="hit"}}{RATE})) / sum(rate({rc}{{{M}}}{RATE}))',
            )
        )
        .with_panel(
            stat(
                lay,
                "Keyed requests answered without compute",
                "Share of idempotent requests answered by the cache or the idempotency store.",
                "percentunit",
                f'sum(rate({idem}{{outcome=~"cached|stored"}}{RATE})) / sum(rate({idem}{RATE}))',
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Cache hit ratio by model",
                "Hits per lookup.",
                "percentunit",
                (
                    f'sum by (model) (rate({rc}{{{M},result="hit"}}{RATE})) '
                    f"/ sum by (model) (rate({rc}{{{M}}}{RATE}))",
                    "{{model}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Cache lookups by result",
                "Lookups per second.",
                "reqps",
                (f"sum by (model, result) (rate({rc}{{{M}}}{RATE}))", "{{model}} {{result}}"),
            )
        )
        .with_row(row(lay, "Idempotency"))
        .with_panel(
            timeseries(
                lay,
                "Idempotent requests by outcome",
                "computed: claimed and computed here; cached: answered by the result "
                "cache; stored: answered from the idempotency store (a retry or replay).",
                "reqps",
                (f"sum by (outcome) (rate({idem}{RATE}))", "{{outcome}}"),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Share of OK answers served from the cache",
                "Cache hits per successful request, by model.",
                "percentunit",
                (
                    f'sum by (model) (rate({rc}{{{M},result="hit"}}{RATE})) / sum by (model) '
                    f'(rate(aiml021_gateway_requests_total{{{M},status="OK"}}{RATE}))',
                    "{{model}}",
                ),
            )
        )
    )


EVENTS = "aiml021_gateway_telemetry_events_total"
R = 'route=~"$route"'


def _route_share(route: str) -> str:
    return f'sum(rate({EVENTS}{{route="{route}"}}{RATE})) / sum(rate({EVENTS}{RATE}))'


def devices() -> Dashboard:
    """What devices report: where answers came from, their latency, bytes, dropped telemetry."""
    lay = Layout()
    return (
        dashboard(
            "aiml021-devices",
            "aiml021 / Devices",
            "Device telemetry as the gateways receive it: answers by route (edge exit, "
            "offload to the cloud, fallback, cache, deferred), device-measured latency, bytes.",
            ["devices", "telemetry"],
        )
        .with_variable(label_variable("route", "Route", EVENTS))
        .with_row(row(lay, "Routes"))
        .with_panel(
            stat(
                lay,
                "Edge exit rate",
                "Answers from a confident early exit on the device.",
                "percentunit",
                _route_share("edge"),
            )
        )
        .with_panel(
            stat(
                lay,
                "Offload rate",
                "Answers the cloud computed.",
                "percentunit",
                _route_share("cloud"),
            )
        )
        .with_panel(
            stat(
                lay,
                "Edge fallback rate",
                "Cloud answer too late: the device answered locally.",
                "percentunit",
                _route_share("edge_fallback"),
            )
        )
        .with_panel(
            stat(
                lay,
                "Telemetry dropped",
                "Events devices dropped (buffer full) per event produced.",
                "percentunit",
                f"sum(rate(aiml021_gateway_telemetry_dropped_total{RATE})) / "
                f"(sum(rate(aiml021_gateway_telemetry_dropped_total{RATE})) + sum(rate({EVENTS}{RATE})))",
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Device answers by route (share)",
                "Stacked to 100%.",
                "percentunit",
                (f"sum by (route) (rate({EVENTS}{{{R}}}{RATE}))", "{{route}}"),
                stack_percent=True,
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Device answers / s by route",
                "Telemetry events per second.",
                "reqps",
                (f"sum by (route) (rate({EVENTS}{{{R}}}{RATE}))", "{{route}}"),
            )
        )
        .with_row(row(lay, "Latency and bytes"))
        .with_panel(
            timeseries(
                lay,
                "Device-measured latency",
                "End to end, as devices report it.",
                "s",
                *_quantiles("aiml021_gateway_device_latency_seconds", "route", R, (0.5, 0.95)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Bytes devices sent and received",
                "For their requests.",
                "Bps",
                (
                    f"sum by (direction) (rate(aiml021_gateway_telemetry_bytes_total{RATE}))",
                    "{{direction}}",
                ),
            )
        )
    )


CONF = "aiml021_gateway_offload_exit_confidence"
MD = 'model=~"$model",device_class=~"$device_class"'


def policy() -> Dashboard:
    """What the offloading policy does and what it costs: offload vs exit shares, how sure
    devices were when they offloaded, latency and bytes per answer."""
    lay = Layout()
    return (
        dashboard(
            "aiml021-policy",
            "aiml021 / Policy impact",
            "Offload decisions and their cost: shares of answers by route, exit confidence "
            "when devices offloaded (by model and device class), latency and bytes.",
            ["devices", "policy"],
        )
        .with_variable(label_variable("model", "Model", f"{CONF}_count"))
        .with_variable(label_variable("device_class", "Device class", f"{CONF}_count"))
        .with_row(row(lay, "Decisions"))
        .with_panel(
            timeseries(
                lay,
                "Offload, exit and fallback shares",
                "Share of device answers.",
                "percentunit",
                (_route_share("cloud"), "offload"),
                (_route_share("edge"), "edge exit"),
                (_route_share("edge_fallback"), "fallback"),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Offloads by model and device class",
                "Offloaded requests that carried the device's decision context.",
                "reqps",
                (
                    f"sum by (model, device_class) (rate({CONF}_count{{{MD}}}{RATE}))",
                    "{{model}} {{device_class}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Exit confidence when offloading",
                "Calibrated confidence of the last exit before the device asked the "
                "cloud: a threshold change moves it.",
                "percentunit",
                *_quantiles(CONF, "model, device_class", MD, (0.5, 0.9)),
            )
        )
        .with_row(row(lay, "Cost of offloading"))
        .with_panel(
            timeseries(
                lay,
                "Device p95 latency by route",
                "What an offload costs in time compared with an edge exit.",
                "s",
                *_quantiles("aiml021_gateway_device_latency_seconds", "route", "", (0.95,)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Bytes sent per device answer",
                "Device egress per answer: what offloading costs on the wire.",
                "bytes",
                (
                    f'sum(rate(aiml021_gateway_telemetry_bytes_total{{direction="sent"}}{RATE})) '
                    f"/ sum(rate({EVENTS}{RATE}))",
                    "sent per answer",
                ),
            )
        )
    )


DASHBOARDS = {"gateway": gateway, "cache": cache, "devices": devices, "policy": policy}
"""File stem under deploy/grafana/dashboards -> the function that builds it."""

__all__ = ["DASHBOARDS", "cache", "devices", "gateway", "policy"]
