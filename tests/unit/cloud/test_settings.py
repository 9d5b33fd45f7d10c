"""The gateway settings tree: ``aiml021 serve`` flags > env > ``--config`` > defaults, wrong keys
named, and every knob reaching the object the composition root builds (no dead knobs)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cloud._settings import GatewaySettings
from cloud.cli import FLAGS, register, settings_from_args
from common.cli import main


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


CONFIG = """
models_dir = "from-file"
[server]
port = 7001
host = "0.0.0.0"
allow_insecure_non_loopback = true
[session]
max_inflight = 8
[stores]
metadata_url = "none"
[stores.prices]
per_gb_in = 0.5
[policy]
kind = "thompson"
"""


def test_serve_reads_flags_over_env_over_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    s = settings_from_args(_args("--config", str(cfg)))
    assert (s.models_dir, s.server.port, s.server.host) == (Path("from-file"), 7001, "0.0.0.0")
    assert (s.session.max_inflight, s.stores.prices.per_gb_in, s.policy.kind) == (
        8,
        0.5,
        "thompson",
    )
    assert s.metrics.port == 8002  # untouched keys keep their defaults
    monkeypatch.setenv("AIML021_GATEWAY_SERVER__PORT", "7002")
    monkeypatch.setenv("AIML021_GATEWAY_POLICY__KIND", "linucb")
    s = settings_from_args(_args("--config", str(cfg)))
    assert (s.server.port, s.server.host, s.policy.kind) == (7002, "0.0.0.0", "linucb")
    s = settings_from_args(_args("--config", str(cfg), "--port", "7003", "--insecure"))
    assert (s.server.port, s.server.host, s.tls.insecure) == (7003, "0.0.0.0", True)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "gateway.example"])
def test_insecure_binds_loopback_only_unless_allowed(host: str) -> None:
    with pytest.raises(ValueError, match=r"server\.allow_insecure_non_loopback"):
        GatewaySettings(server={"host": host}, tls={"insecure": True})
    allowed = GatewaySettings(
        server={"host": host, "allow_insecure_non_loopback": True}, tls={"insecure": True}
    )
    assert allowed.server.host == host
    assert GatewaySettings(server={"host": host}).server.host == host  # mTLS: any address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_insecure_on_loopback_needs_no_override(host: str) -> None:
    assert GatewaySettings(server={"host": host}, tls={"insecure": True}).tls.insecure


def test_every_serve_flag_names_a_key_of_the_tree() -> None:
    from common.settings import unknown_key

    for key in FLAGS.values():
        assert unknown_key(GatewaySettings, key.split(".")) is None, key


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("file", "unknown key 'server.prot'"),
        ("env", "AIML021_GATEWAY_SERVER__PROT: unknown setting 'server.prot'"),
        (
            "old-env",
            "AIML021_GATEWAY_TRITON_URL: unknown setting 'triton_url' (renamed to 'triton.url')",
        ),
        ("retired", "AIML021_STORES_REDIS_URL is no longer read"),
        ("value", "session.max_inflight (AIML021_GATEWAY_SESSION__MAX_INFLIGHT)"),
        ("kind", "policy.kind (AIML021_GATEWAY_POLICY__KIND): unknown kind 'nope'"),
    ],
)
def test_serve_refuses_a_wrong_key_and_names_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    named: str,
) -> None:
    argv = ["serve"]
    if source == "file":
        (tmp_path / "g.toml").write_text("[server]\nprot = 1\n")
        argv += ["--config", str(tmp_path / "g.toml")]
    env = {
        "env": ("AIML021_GATEWAY_SERVER__PROT", "1"),
        "old-env": ("AIML021_GATEWAY_TRITON_URL", "t:1"),
        "retired": ("AIML021_STORES_REDIS_URL", "redis://r"),
        "value": ("AIML021_GATEWAY_SESSION__MAX_INFLIGHT", "0"),
        "kind": ("AIML021_GATEWAY_POLICY__KIND", "nope"),
    }.get(source)
    if env:
        monkeypatch.setenv(*env)
    assert main(argv) == 1  # refused before anything binds a port
    assert named in capsys.readouterr().err


def test_policy_kind_alone_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kind without profile or state: that kind over the profile derived from the bundle."""
    from cloud._policy import gateway_policy
    from tests.support.tiny_cnn import build_bundle

    build_bundle(tmp_path / "tiny_cnn")
    monkeypatch.setenv("AIML021_GATEWAY_POLICY__KIND", "thompson")
    s = GatewaySettings.load()
    assert type(gateway_policy(tmp_path, s.policy.bundle, s.policy)).__name__ == "ThompsonPolicy"


async def test_every_knob_reaches_the_gateway(tmp_path: Path) -> None:
    from cloud import Gateway
    from cloud.stores import build_stores

    s = GatewaySettings.load(
        overrides={
            "models_dir": tmp_path,
            "session": {
                "max_request_bytes": 1000,
                "max_chunk_bytes": 500,
                "max_inflight": 3,
                "buffer_bytes": 2000,
                "global_buffer_bytes": 4000,
                "reassembly_timeout_s": 1.5,
                "ping_interval_s": 2.5,
            },
            "cache": {"entries": 7, "ttl_s": 9.0, "tail_segments": True},
            "idempotency": {"entries": 11, "ttl_s": 13.0, "pending_ttl_s": 17.0},
            "stores": {"metadata_url": "none"},
        }
    )
    for stores in (None, build_stores(s.stores, s.idempotency, s.cache)):
        gw = Gateway(s, stores=stores)
        lim = gw.limits
        assert (lim.max_request_bytes, lim.max_chunk_bytes, lim.max_inflight_requests) == (
            1000,
            500,
            3,
        )
        assert (lim.max_session_buffer_bytes, lim.reassembly_timeout_s, lim.ping_interval_s) == (
            2000, 1.5, 2.5
        )  # fmt: skip
        cache = gw.cache_store.inner  # entries keyed by org around the configured store
        assert (cache._max, cache._ttl_s) == (7, 9.0)
        idem = gw.dataplane.idempotency
        assert (idem._max_keys, idem._ttl_s, idem._pending_ttl_s) == (11, 13.0, 17.0)
        assert gw.dataplane.cache_tail_segments and gw.dataplane.cache_full_models
        await gw.dataplane.backend.close()


def test_docs_list_every_key_of_the_tree() -> None:
    from common.settings import settings_table

    doc = (Path(__file__).resolve().parents[3] / "docs" / "gateway.md").read_text()
    embedded = (
        doc.split("<!-- settings-table:")[1].split("-->", 1)[1].split("<!-- /settings-table")[0]
    )
    assert embedded.strip() == settings_table(GatewaySettings).strip(), (
        "docs/gateway.md is stale: paste common.settings.settings_table(GatewaySettings)"
    )
