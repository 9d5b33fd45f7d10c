"""Dashboards of the gateway itself: traffic, errors, latency against the SLA, batching and
utilisation (``gateway``); result cache and idempotency (``cache``). Queries use the gateway's
metrics (cloud/_metrics.py) and, where a panel says so, series recorded by
deploy/prometheus/rules."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from ._panels import RATE, Layout, dashboard, label_variable, quantiles, row, stat, timeseries

M = 'model=~"$model"'


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
                *quantiles("aiml021_gateway_queue_seconds", "model", M, (0.5, 0.95, 0.99)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Batch compute time",
                "Backend time per batch; every request in a batch waits for all of it.",
                "s",
                *quantiles("aiml021_gateway_compute_seconds", "model", M, (0.5, 0.95)),
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


__all__ = ["cache", "gateway"]
