"""Dashboards by region: per-request latency, drift of what devices see, the devices' replay
backlog (``fleet``), and what requests cost against each organisation's budget, with the
gateways' certificates and batch workers (``cost``)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from ._panels import RATE, Layout, dashboard, label_variable, quantiles, row, stat, timeseries

DURATION = "aiml021_gateway_request_duration_seconds"
MR = 'model=~"$model",region=~"$region"'
RD = 'region=~"$region",device_class=~"$device_class"'


def fleet() -> Dashboard:
    """Latency, traffic and drift by model and region; device replay backlog by region and
    device class."""
    lay = Layout()
    return (
        dashboard(
            "aiml021-fleet",
            "aiml021 / Fleet by region",
            "Per-request gateway latency and traffic by model and region, drift of exit "
            "confidences and offloaded features against their reference window (PSI, KL), "
            "and the offloads waiting in devices' replay queues.",
            ["fleet", "drift", "region"],
        )
        .with_variable(label_variable("model", "Model", f"{DURATION}_count"))
        .with_variable(label_variable("region", "Region", f"{DURATION}_count"))
        .with_variable(
            label_variable(
                "device_class", "Device class", "aiml021_gateway_device_replay_backlog_requests"
            )
        )
        .with_row(row(lay, "Latency and traffic"))
        .with_panel(
            timeseries(
                lay,
                "Request time by region",
                "Gateway time of each request (decode, queue, compute), p50 and p95.",
                "s",
                *quantiles(DURATION, "model, region", MR, (0.5, 0.95)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Requests / s by region",
                "Finished requests by region and API.",
                "reqps",
                (
                    f"sum by (region, api) (rate({DURATION}_count{{{MR}}}{RATE}))",
                    "{{region}} {{api}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "p95 against the SLA target",
                "Recorded p95 by model and region; the dashed line's target is per model.",
                "s",
                (
                    f"model_region:{DURATION}:p95_5m{{{MR}}}",
                    "{{model}} {{region}} p95",
                ),
                (
                    'model:aiml021_sla_p95_latency_target_seconds:effective{model=~"$model"}',
                    "{{model}} target",
                ),
            )
        )
        .with_row(row(lay, "Drift"))
        .with_panel(
            timeseries(
                lay,
                "PSI by signal",
                "Population stability index of the recent window against the reference "
                "(over 0.25: a shift; the alert waits for a full window).",
                "none",
                (
                    f"aiml021_gateway_drift_psi{{{MR}}}",
                    "{{model}} {{region}} {{signal}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "KL divergence by signal",
                "KL(recent ‖ reference) in nats.",
                "none",
                (
                    f"aiml021_gateway_drift_kl_divergence{{{MR}}}",
                    "{{model}} {{region}} {{signal}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Drift windows",
                "Samples in each signal's reference (while it fills) and recent window.",
                "none",
                (
                    f"aiml021_gateway_drift_window_samples{{{MR}}}",
                    "{{model}} {{region}} {{signal}} {{phase}}",
                ),
            )
        )
        .with_row(row(lay, "Devices"))
        .with_panel(
            stat(
                lay,
                "Offloads waiting on devices",
                "Replay backlog summed over devices heard in the last 15 minutes.",
                "none",
                f"sum(aiml021_gateway_device_replay_backlog_requests{{{RD}}})",
            )
        )
        .with_panel(
            stat(
                lay,
                "Reporting devices",
                "Devices whose telemetry arrived in the last 15 minutes.",
                "none",
                f"sum(aiml021_gateway_reporting_devices{{{RD}}})",
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Replay backlog by region and device class",
                "Offloads queued while offline, waiting to be sent.",
                "none",
                (
                    "sum by (region, device_class) "
                    f"(aiml021_gateway_device_replay_backlog_requests{{{RD}}})",
                    "{{region}} {{device_class}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Request time by region and device class",
                "Gateway time of each request by the device class its request context declares "
                "(empty: KServe and REST requests), p95: the console's heatmap over time.",
                "s",
                *quantiles(DURATION, "region, device_class", RD, (0.95,)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Expected accuracy of device answers",
                "Mean calibrated confidence of the answers devices report, by route (no ground "
                "truth is recorded; a calibrated confidence is the chance the answer is right).",
                "percentunit",
                (
                    "sum by (route) (rate(aiml021_gateway_device_answer_confidence_sum"
                    f"{RATE})) / sum by (route) "
                    f"(rate(aiml021_gateway_device_answer_confidence_count{RATE}))",
                    "{{route}}",
                ),
            )
        )
    )


ORG = 'org=~"$org"'


def cost() -> Dashboard:
    """Cost per organisation, model and region, budgets, and the gateways' own health signals
    (certificate expiry, batch-worker restarts)."""
    lay = Layout()
    return (
        dashboard(
            "aiml021-cost",
            "aiml021 / Cost and budgets",
            "What requests cost (each request's share of its batch's compute plus its answer "
            "bytes, priced from accounting.prices) by organisation, model and region, and each "
            "organisation's budget.",
            ["cost", "budget"],
        )
        .with_variable(label_variable("org", "Organisation", "aiml021_gateway_cost_total"))
        .with_row(row(lay, "Budgets"))
        .with_panel(
            stat(
                lay,
                "Cost per hour",
                "All organisations shown, price-table currency.",
                "none",
                f"sum(rate(aiml021_gateway_cost_total{{{ORG}}}{RATE})) * 3600",
            )
        )
        .with_panel(
            stat(
                lay,
                "Largest budget share spent",
                "Of this period's budget, the organisation that spent most.",
                "percentunit",
                f"max(org:aiml021_gateway_budget_spent:ratio{{{ORG}}})",
            )
        )
        .with_panel(
            stat(
                lay,
                "Certificate time left",
                "Soonest-expiring gateway TLS certificate.",
                "s",
                "min(aiml021_gateway_certificate_expiry_timestamp_seconds) - time()",
            )
        )
        .with_panel(
            stat(
                lay,
                "Batch-worker restarts (1h)",
                "Crashed batch workers restarted, all models.",
                "none",
                "sum(increase(aiml021_gateway_batch_worker_restarts_total[1h]))",
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Budget spent by organisation",
                "Share of the current period's budget.",
                "percentunit",
                (f"org:aiml021_gateway_budget_spent:ratio{{{ORG}}}", "{{org}}"),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Cost per hour by organisation and model",
                "Price-table currency per hour.",
                "none",
                (
                    f"sum by (org, model) (rate(aiml021_gateway_cost_total{{{ORG}}}{RATE})) * 3600",
                    "{{org}} {{model}}",
                ),
            )
        )
        .with_row(row(lay, "What is billed"))
        .with_panel(
            timeseries(
                lay,
                "Cost per hour by region",
                "Price-table currency per hour.",
                "none",
                (
                    f"sum by (region) (rate(aiml021_gateway_cost_total{{{ORG}}}{RATE})) * 3600",
                    "{{region}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Billed compute",
                "Backend seconds per second billed to requests (their share of each batch).",
                "s",
                (
                    "sum by (org, processor) "
                    f"(rate(aiml021_gateway_billed_compute_seconds_total{{{ORG}}}{RATE}))",
                    "{{org}} {{processor}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Egress",
                "Answer bytes sent back to devices.",
                "Bps",
                (
                    f"sum by (org) (rate(aiml021_gateway_egress_bytes_total{{{ORG}}}{RATE}))",
                    "{{org}}",
                ),
            )
        )
    )


__all__ = ["cost", "fleet"]
