"""Signed bundles in a real S3-compatible server (moto's server mode, as a process): publish
signs, the gateway installs every version (and so serves an old head its matching tail), edge
devices follow their class's assignment, swap only a bundle that verified and runs, and roll
back to the last known good one; tampered, mis-signed and mislabelled bundles never get in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.artifacts import (
    ArtifactStore,
    BundleRef,
    BundleUpdater,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    pack_bundle,
    sign_bundle,
)
from common.bundle import load_bundle
from common.errors import BundleError, InvalidArgument, NotFound, Unavailable
from tests.integration.cloud._gateway import SessionClient, hello
from tests.support.edge_bundle import make_bundle
from tests.support.s3 import S3Server, run_s3

NAME = "synthetic_branchy"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with run_s3() as server:
        yield server


def versioned(root: Path, version: str, seed: int = 0) -> Path:
    """The synthetic bundle, declared as ``version``."""
    make_bundle(root, thresholds=(0.99, 0.99, 0.0), seed=seed)
    manifest = root / "manifest.json"
    data = json.loads(manifest.read_text())
    data["version"] = version
    manifest.write_text(json.dumps(data))
    load_bundle(root, verify=True)
    return root


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_signing_key(tmp_path / "sign.key", tmp_path / "sign.pub")
    return tmp_path / "sign.key", tmp_path / "sign.pub"


def store_with(s3: S3Server, tmp: Path, signing: Path, versions: list[str]) -> ArtifactStore:
    store = ArtifactStore(s3.new_bucket(), s3.endpoint)
    for i, v in enumerate(versions):
        store.publish(versioned(tmp / f"src-{v}", v, seed=i), load_signing_key(signing))
    return store


def test_publish_registers_immutable_signed_versions(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1", "2"])
    assert store.names() == [NAME] and store.versions(NAME) == ["1", "2"]
    with pytest.raises(InvalidArgument, match="immutable"):
        store.publish(tmp_path / "src-1", load_signing_key(keys[0]))
    with pytest.raises(NotFound):
        store.assign("cam", BundleRef(NAME, "7"))
    with pytest.raises(InvalidArgument):
        store.assign("../etc", BundleRef(NAME, "1"))


def test_gateway_installs_every_version_and_serves_an_old_head_its_tail(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1", "2"])
    settings = GatewaySettings.model_validate(
        {
            "models_dir": tmp_path / "models",
            "server": {"host": "127.0.0.1", "port": 0},
            "metrics": {"port": None},
            "tls": {"insecure": True},
            "stores": {"metadata_url": "none"},
            "artifacts": {"bucket": store.bucket, "endpoint": s3.endpoint, "verify_key": keys[1]},
            "cache": {"full_models": False},
        }
    )

    async def run() -> tuple[object, object, set[tuple[str, str]]]:
        gw = Gateway.from_settings(settings)
        async with gw:
            served = {(s.name, s.version) for s in gw.dataplane.repository.specs()}
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
                client = SessionClient(ch)
                await client.send(hello("dev-old-head"))
                await client.recv(("welcome",))
                cut = np.zeros((1, 4, 14, 14), np.float32)
                old = await client.infer("a", cut, model=NAME, cut="cut1", version="1")
                gone = await client.infer("b", cut, model=NAME, cut="cut1", version="0")
                await client.call.done_writing()
        return old, gone, served

    old, gone, served = asyncio.run(run())
    assert {(NAME, "1"), (NAME, "2")} <= served
    assert old.infer_result.served_model_version == "1"  # type: ignore[attr-defined]
    err = gone.infer_error.status  # type: ignore[attr-defined]
    assert err.code == grpc.StatusCode.NOT_FOUND.value[0] and "'0'" in err.message


def test_tampered_or_foreign_signed_bundles_never_install(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1"])
    verify = load_verify_key(keys[1].read_bytes())
    client = s3.client()
    archive_key = f"bundles/{NAME}/1/bundle.tar"
    good = client.get_object(Bucket=store.bucket, Key=archive_key)["Body"].read()
    client.put_object(Bucket=store.bucket, Key=archive_key, Body=good[:-10] + b"x" * 10)
    with pytest.raises(BundleError, match="signature does not verify"):
        store.install(BundleRef(NAME, "1"), verify, tmp_path / "out1")
    # signed by someone else's key
    generate_signing_key(tmp_path / "evil.key", tmp_path / "evil.pub")
    evil = load_signing_key(tmp_path / "evil.key")
    client.put_object(Bucket=store.bucket, Key=archive_key, Body=good)
    client.put_object(Bucket=store.bucket, Key=archive_key + ".sig",
                      Body=sign_bundle(evil, NAME, "1", good))  # fmt: skip
    with pytest.raises(BundleError, match="signature does not verify"):
        store.install(BundleRef(NAME, "1"), verify, tmp_path / "out2")
    # a genuine signature of version 1 replayed as version 2
    genuine = sign_bundle(load_signing_key(keys[0]), NAME, "1", good)
    client.put_object(Bucket=store.bucket, Key=f"bundles/{NAME}/2/bundle.tar", Body=good)
    client.put_object(Bucket=store.bucket, Key=f"bundles/{NAME}/2/bundle.tar.sig", Body=genuine)
    with pytest.raises(BundleError, match="signature does not verify"):
        store.install(BundleRef(NAME, "2"), verify, tmp_path / "out3")
    assert not any((tmp_path / d).exists() for d in ("out1", "out2", "out3"))


def test_device_swaps_to_its_assignment_and_rolls_back_to_last_known_good(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1", "2"])
    # version 3 is validly signed but broken: a segment that is not ONNX (hashes refreshed)
    broken = versioned(tmp_path / "src-3", "3")
    (broken / "stage1.onnx").write_bytes(b"not an onnx model")
    b = load_bundle(broken, verify=False)
    b.refresh_files()
    b.save()
    store.publish(broken, load_signing_key(keys[0]))
    swaps: list[Path] = []
    updater = BundleUpdater(store, load_verify_key(keys[1].read_bytes()), "cam", tmp_path / "dev",
                            on_swap=swaps.append)  # fmt: skip
    assert updater.check().assigned is None and updater.current is None
    store.assign("cam", BundleRef(NAME, "1"))
    assert updater.check().swapped and updater.current == tmp_path / "dev/versions" / f"{NAME}-1"
    store.assign("cam", BundleRef(NAME, "2"))
    r = updater.check()
    assert r.swapped and r.current == f"{NAME}-2" and updater.last_good == f"{NAME}-1"
    store.assign("cam", BundleRef(NAME, "3"))
    r = updater.check()
    assert not r.swapped and "3" in r.error and r.current == f"{NAME}-2"
    assert updater.check().error.startswith(f"{NAME}-3 failed before")  # not retried
    # version 2 passed the probe but fails in service: back to 1
    assert updater.report_failure("error rate 40%") == f"{NAME}-1"
    assert updater.current == tmp_path / "dev/versions" / f"{NAME}-1"
    assert updater.current is not None and len(swaps) == 3
    assert load_bundle(updater.current).manifest.version == "1"
    # a new updater on the same directory (the device restarted) keeps what it decided
    again = BundleUpdater(store, load_verify_key(keys[1].read_bytes()), "cam", tmp_path / "dev")
    assert again.check().current == f"{NAME}-1"


def test_archives_are_deterministic(tmp_path: Path) -> None:
    a = versioned(tmp_path / "a", "1")
    assert pack_bundle(a) == pack_bundle(a)


def test_a_bundle_rolled_back_from_is_never_last_good_and_without_one_the_link_goes(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1", "2", "3"])
    verify = load_verify_key(keys[1].read_bytes())
    updater = BundleUpdater(store, verify, "cam", tmp_path / "dev")
    store.assign("cam", BundleRef(NAME, "1"))
    assert updater.check().swapped and updater.last_good == ""
    # no last known good: the device goes back to the bundle it shipped with
    assert updater.report_failure("head raises") == ""
    assert updater.current is None and f"{NAME}-1" in updater.bad
    store.assign("cam", BundleRef(NAME, "2"))
    assert updater.check().swapped
    store.assign("cam", BundleRef(NAME, "3"))
    assert updater.check().swapped and updater.last_good == f"{NAME}-2"
    assert updater.report_failure("gateway refused") == f"{NAME}-2"
    assert updater.last_good == "" and updater.check().error.startswith(f"{NAME}-3 failed")
    # a failure that was not the bundle's (not confirmed in time): taken again at the next check
    store.publish(versioned(tmp_path / "src-4", "4", seed=4), load_signing_key(keys[0]))
    store.assign("cam", BundleRef(NAME, "4"))
    assert updater.check().swapped
    assert updater.report_failure("no answer in time", retry=True) == f"{NAME}-2"
    assert f"{NAME}-4" not in updater.bad and updater.check().swapped


def test_oversized_and_escaping_archives_are_refused_before_use(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1"])
    verify = load_verify_key(keys[1].read_bytes())
    with pytest.raises(BundleError, match="not downloaded"):
        store.install(BundleRef(NAME, "1"), verify, tmp_path / "small", max_bytes=1024)
    src = versioned(tmp_path / "src-esc", "5")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["files"]["../stage1.onnx"] = manifest["files"]["stage1.onnx"]
    (src / "manifest.json").write_text(json.dumps(manifest))
    archive = pack_bundle(src)
    client = s3.client()
    client.put_object(Bucket=store.bucket, Key=f"bundles/{NAME}/5/bundle.tar", Body=archive)
    client.put_object(Bucket=store.bucket, Key=f"bundles/{NAME}/5/bundle.tar.sig",
                      Body=sign_bundle(load_signing_key(keys[0]), NAME, "5", archive))  # fmt: skip
    with pytest.raises(BundleError, match="outside the bundle"):
        store.install(BundleRef(NAME, "5"), verify, tmp_path / "esc")
    assert not (tmp_path / "esc").exists() and not (tmp_path / "small").exists()


def test_storage_out_of_reach_does_not_mark_the_assigned_bundle_bad(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1"])
    store.assign("cam", BundleRef(NAME, "1"))

    class Unreachable(ArtifactStore):
        def install(self, *a: object, **kw: object) -> Path:
            raise Unavailable("object storage unreachable: connection refused")

    flaky = Unreachable(store.bucket, s3.endpoint)
    updater = BundleUpdater(flaky, load_verify_key(keys[1].read_bytes()), "cam", tmp_path / "d")
    r = updater.check()
    assert not r.swapped and "unreachable" in r.error and updater.bad == []
    updater.store = store
    assert updater.check().swapped


def test_a_hostile_assignment_is_refused_and_the_device_stays_where_it_is(
    s3: S3Server, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    store = store_with(s3, tmp_path, keys[0], ["1"])
    updater = BundleUpdater(store, load_verify_key(keys[1].read_bytes()), "cam", tmp_path / "d")
    store.assign("cam", BundleRef(NAME, "1"))
    assert updater.check().swapped
    client = s3.client()
    for body in (b"{" * (1 << 20), b"[1, 2]", b'{"name": "x"}', b'{"name": 1, "version": 2}',
                 json.dumps({"name": NAME, "version": "../1"}).encode()):  # fmt: skip
        client.put_object(Bucket=store.bucket, Key="assignments/cam.json", Body=body)
        with pytest.raises(InvalidArgument):
            updater.check()
        assert updater.current == tmp_path / "d/versions" / f"{NAME}-1"
