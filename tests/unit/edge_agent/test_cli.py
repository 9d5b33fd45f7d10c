"""``aiml021 edge run`` over IDX, .npy and PGM inputs, offline and against the real gateway."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from common.cli import main
from common.errors import InvalidArgument, NotFound
from common.settings import unknown_key
from edge_agent._inputs import load_inputs, read_pgm
from edge_agent._settings import EdgeSettings
from edge_agent.cli import FLAGS, register, settings_from_args
from tests.support.edge_bundle import images
from tests.support.gateway import running_gateway


def _idx(tmp_path: Path, n: int) -> Path:
    im = images(n)
    lab = (np.arange(n) % 10).astype(np.uint8)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + im.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">HBBI", 0, 8, 1, n) + lab.tobytes())
    )
    return p


def test_inputs_idx_npy_and_pgm_folder(tmp_path: Path) -> None:
    imgs, labels = load_inputs(_idx(tmp_path, 5))
    assert imgs.shape == (5, 28, 28) and labels is not None and list(labels) == [0, 1, 2, 3, 4]
    folder = tmp_path / "imgs"
    folder.mkdir()
    np.save(folder / "a.npy", images(1)[0])
    (folder / "b.pgm").write_bytes(b"P5\n# comment\n28 28\n255\n" + images(1, seed=2)[0].tobytes())
    stacked, none = load_inputs(folder)
    assert stacked.shape == (2, 28, 28) and none is None
    assert np.array_equal(read_pgm(folder / "b.pgm"), images(1, seed=2)[0])
    np.save(tmp_path / "x.npy", images(3))
    assert load_inputs(tmp_path / "x.npy")[0].shape == (3, 28, 28)
    with pytest.raises(NotFound):
        load_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument):
        load_inputs(tmp_path / "empty")
    (tmp_path / "junk.bin").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InvalidArgument):
        load_inputs(tmp_path / "junk.bin")


def test_edge_run_offline_prints_summary_and_json(
    tmp_path: Path, local_bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.json"
    argv = ["edge", "run", "--bundle", str(local_bundle_dir), "--input", str(_idx(tmp_path, 20))]
    assert main([*argv, "--json", str(out), "--no-progress", "--limit", "10"]) == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 10 and summary["routes"] == {"edge": 1.0}
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert "route edge" in capsys.readouterr().out


async def test_edge_run_against_gateway(
    tmp_path: Path, bundle_dir: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        out = tmp_path / "s.json"
        argv = [
            "edge", "run", "--bundle", str(bundle_dir), "--gateway", gw.address,
            "--insecure", "--input", str(_idx(tmp_path, 12)), "--json", str(out), "--no-progress",
            "--sla-ms", "2000", "--device-id", "cli-dev",
        ]  # fmt: skip
        assert await asyncio.to_thread(main, argv) == 0
        summary = json.loads(out.read_text())
        assert summary["routes"] == {"cloud": 1.0} and summary["bytes_per_request"] > 0
        assert gw.frames.hellos[0].device_id == "cli-dev"
        assert {r.device_id for r in gw.records} == {"cli-dev"} and len(gw.records) == 12


def test_edge_run_needs_tls_or_insecure_with_gateway(
    tmp_path: Path, local_bundle_dir: Path
) -> None:
    argv = ["edge", "run", "--bundle", str(local_bundle_dir), "--gateway", "127.0.0.1:1",
            "--input", str(_idx(tmp_path, 2))]  # fmt: skip
    assert main(argv) == 1


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["edge", "run", "--input", "x", *argv])


EDGE_CONFIG = """
device_id = "from-file"
gateway = "gw:1"
[tls]
insecure = true
[session]
max_inflight = 8
[cache]
entries = 0
[routing]
sla_ms = 50
"""


def test_edge_reads_flags_over_env_over_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(EDGE_CONFIG)
    s = settings_from_args(_parse("--config", str(cfg)))
    assert (s.device_id, s.gateway, s.tls.insecure) == ("from-file", "gw:1", True)
    assert (s.session.max_inflight, s.cache.entries, s.routing.sla_ms) == (8, 0, 50)
    monkeypatch.setenv("AIML021_EDGE_DEVICE_ID", "from-env")
    monkeypatch.setenv("AIML021_EDGE_ROUTING__SLA_MS", "60")
    s = settings_from_args(_parse("--config", str(cfg)))
    assert (s.device_id, s.routing.sla_ms, s.cache.entries) == ("from-env", 60, 0)
    s = settings_from_args(_parse("--config", str(cfg), "--sla-ms", "70", "--device-id", "flag"))
    assert (s.device_id, s.routing.sla_ms, s.gateway) == ("flag", 70, "gw:1")


def test_every_edge_flag_names_a_key_of_the_tree() -> None:
    for key in FLAGS.values():
        assert unknown_key(EdgeSettings, key.split(".")) is None, key


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("file", "unknown key 'cache.size'"),
        (
            "env",
            "AIML021_EDGE_CACHE_SIZE: unknown setting 'cache_size' (renamed to 'cache.entries')",
        ),
        ("value", "session.max_inflight (AIML021_EDGE_SESSION__MAX_INFLIGHT)"),
    ],
)
def test_edge_refuses_a_wrong_key_and_names_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_bundle_dir: Path,
    source: str,
    named: str,
) -> None:
    argv = ["edge", "run", "--bundle", str(local_bundle_dir), "--input", str(_idx(tmp_path, 2))]
    if source == "file":
        (tmp_path / "e.json").write_text(json.dumps({"cache": {"size": 1}}))
        argv += ["--config", str(tmp_path / "e.json")]
    if source == "env":
        monkeypatch.setenv("AIML021_EDGE_CACHE_SIZE", "1")
    if source == "value":
        monkeypatch.setenv("AIML021_EDGE_SESSION__MAX_INFLIGHT", "0")
    assert main(argv) == 1
    assert named in capsys.readouterr().err
