"""The TypeScript client (clients/typescript) against the real gateway over mTLS, with node's test
runner: a session that survives a dropped stream (same idempotency keys, each computed once),
inline and chunked payloads under a byte credit, a failing request that fails alone, the typed
unary services (Decide, ListModels, ModelInfer) and the fetch-based REST client (Decide, features,
ListModels, a typed error). The package is built here first (tsc), so CI
tests the sources as committed; the generated code must match proto/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from common.auth import write_dev_pki
from tests.support.gateway import BUNDLE, VECTOR_MODEL, running_gateway

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "clients" / "typescript"


def _need_node_modules() -> None:
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        # make setup installs them (npm ci in clients/typescript); missing is a setup error
        pytest.fail(f"{PACKAGE}/node_modules missing: run `make setup`")


@pytest.fixture(scope="module")
def built() -> Path:
    _need_node_modules()
    subprocess.run(
        [str(PACKAGE / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=PACKAGE,
        check=True,
        timeout=300,
    )
    return PACKAGE / "dist" / "test"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    _need_node_modules()
    template = (PACKAGE / "buf.gen.yaml").read_text()
    out = tmp_path / "gen"
    (tmp_path / "buf.gen.yaml").write_text(
        template.replace("out: clients/typescript/src/gen", f"out: {out}")
    )
    subprocess.run(
        [str(ROOT / "node_modules" / ".bin" / "buf"), "generate", "--template",
         str(tmp_path / "buf.gen.yaml")],
        cwd=ROOT, check=True, timeout=300,
    )  # fmt: skip
    committed = PACKAGE / "src" / "gen"
    fresh = sorted(p.relative_to(out) for p in out.rglob("*.ts"))
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*.ts"))
    stale = [str(p) for p in fresh if (out / p).read_bytes() != (committed / p).read_bytes()]
    assert not stale, f"clients/typescript/src/gen is stale: regenerate ({stale})"


async def test_typescript_client_session_and_services_over_mtls(
    built: Path, gateway_models_dir: Path, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    write_dev_pki(pki, ["ts-device"])
    keys_out = tmp_path / "keys.json"
    async with running_gateway(
        gateway_models_dir,
        tls_dir=pki,
        hold=True,
        # a byte credit smaller than the chunked test's requests together
        session={"max_chunk_bytes": 4096, "buffer_bytes": 32 * 1024},
        policy={"bundle": BUNDLE},
        rest={"port": 0},
    ) as live:
        assert live.gateway.learner is not None  # Decide has a policy to answer with

        async def release_after_reconnect() -> None:
            while len(live.frames.hellos) < 2:  # noqa: ASYNC110 (a list the tap fills)
                await asyncio.sleep(0.02)
            live.backend.release()

        releaser = asyncio.create_task(release_after_reconnect())
        env = {
            **os.environ,
            "AIML021_GATEWAY": f"localhost:{live.port}",
            "AIML021_REST": f"localhost:{live.gateway.rest_port}",
            "AIML021_TLS_DIR": str(pki),
            "AIML021_DEVICE": "ts-device",
            "AIML021_MODEL": VECTOR_MODEL,
            "AIML021_POLICY_MODEL": BUNDLE,
            "AIML021_KEYS_OUT": str(keys_out),
        }
        node = shutil.which("node")
        assert node is not None
        proc = await asyncio.create_subprocess_exec(
            node, "--test", "--test-reporter=spec", str(built),
            cwd=PACKAGE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        releaser.cancel()
        report = out.decode()
        assert proc.returncode == 0, report
        keys = json.loads(keys_out.read_text())
        computed = live.computations()
        headers = [h.idempotency_key for h in live.frames.headers]
        answered = {r.idempotency_key for r in live.records if r.status == "OK"}
    assert "ℹ pass 5" in report and "ℹ fail 0" in report, report
    assert len(keys) == 4 and len(set(keys)) == 4
    # each held request was written twice: before and after the drop
    assert all(headers.count(k) == 2 for k in keys), headers
    # never computed twice (an answer the dropped stream's request computed reaches the re-sent
    # one from the idempotency store, recorded as cached)
    assert all(computed.get(k, 0) <= 1 for k in keys), [(k, computed.get(k)) for k in keys]
    assert answered >= set(keys)
    # every session the client opened came from the certificate's device
    assert {h.device_id for h in live.frames.hellos} <= {"ts-device", ""}
