"""Dashboards of what devices report (``devices``: routes, device-measured latency, bytes,
dropped telemetry) and of what the offloading policy does (``policy``). The exporter has labels
for model, route and device class; there is no region label yet, so no dashboard offers a region
drill-down."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from ._panels import RATE, Layout, dashboard, label_variable, quantiles, row, stat, timeseries

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
                *quantiles("aiml021_gateway_device_latency_seconds", "route", R, (0.5, 0.95)),
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
OUTCOMES = "aiml021_policy_outcomes_total"
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
                *quantiles(CONF, "model, device_class", MD, (0.5, 0.9)),
            )
        )
        .with_row(row(lay, "A/B: outcomes by policy (PolicyService)"))
        .with_panel(
            timeseries(
                lay,
                "Accuracy by policy",
                "Share of reported outcomes that were correct, per policy that decided: an A/B "
                "experiment's arms side by side.",
                "percentunit",
                (
                    f'sum by (policy) (rate({OUTCOMES}{{result="correct"}}{RATE})) '
                    f"/ sum by (policy) (rate({OUTCOMES}{RATE}))",
                    "{{policy}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "p95 latency by policy",
                "End-to-end latency the callers reported, per policy.",
                "s",
                *quantiles("aiml021_policy_outcome_latency_seconds", "policy", "", (0.95,)),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Offload share and missed deadlines by policy",
                "Share of decisions that offloaded, and of outcomes slower than their deadline.",
                "percentunit",
                (
                    f'sum by (policy) (rate({OUTCOMES}{{action="OFFLOAD"}}{RATE})) '
                    f"/ sum by (policy) (rate({OUTCOMES}{RATE}))",
                    "{{policy}} offload",
                ),
                (
                    f"sum by (policy) (rate(aiml021_policy_deadline_missed_total{RATE})) "
                    f"/ sum by (policy) (rate({OUTCOMES}{RATE}))",
                    "{{policy}} missed",
                ),
            )
        )
        .with_panel(
            timeseries(
                lay,
                "Cloud cost per 1,000 decisions by policy",
                "Reported cloud cost per thousand outcomes.",
                "none",
                (
                    f"1000 * sum by (policy) (rate(aiml021_policy_cloud_cost_total{RATE})) "
                    f"/ sum by (policy) (rate({OUTCOMES}{RATE}))",
                    "{{policy}}",
                ),
            )
        )
        .with_row(row(lay, "Cost of offloading"))
        .with_panel(
            timeseries(
                lay,
                "Device p95 latency by route",
                "What an offload costs in time compared with an edge exit.",
                "s",
                *quantiles("aiml021_gateway_device_latency_seconds", "route", "", (0.95,)),
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


__all__ = ["devices", "policy"]
