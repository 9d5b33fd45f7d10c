"""Model bundles in S3-compatible object storage (AWS S3, MinIO, moto's server in tests).

Layout in the bucket (versions are immutable: publishing an existing one is refused)::

    bundles/<name>/<version>/bundle.tar        the bundle (common.artifacts.pack_bundle)
    bundles/<name>/<version>/bundle.tar.sig    Ed25519 signature (common.artifacts.sign_bundle)
    assignments/<device class>.json            {"name": ..., "version": ...}: what that class runs

Credentials and region come the way boto3 finds them (``AWS_ACCESS_KEY_ID``, ...); ``endpoint``
points at MinIO or another S3-compatible server. The client is synchronous; async callers run it
in a thread.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.artifacts._archive import pack_bundle, unpack_bundle
from common.artifacts._signing import sign_bundle, verify_bundle
from common.bundle import MANIFEST_NAME, load_bundle
from common.errors import BundleError, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

MAX_ASSIGNMENT_BYTES = 4096
"""Largest assignment object read (it holds a name and a version)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Bundle names, versions and device classes: they become object keys and directory names."""


def _check(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidArgument(
            f"{kind} {value!r}: 1-128 of A-Z a-z 0-9 . _ -, not starting with . _ -"
        )
    return value


def _check_contained(root: Path) -> None:
    """BundleError unless every file the manifest lists stays inside ``root`` (a signed
    manifest naming ``../`` would otherwise have the device hash and load files of its own)."""
    try:
        files = json.loads((root / MANIFEST_NAME).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return  # no or no readable manifest: load_bundle says so precisely
    inside = root.resolve()
    for rel in files if isinstance(files, dict) else ():
        p = PurePosixPath(rel)
        target = (root / rel).resolve()
        if p.is_absolute() or ".." in p.parts or not target.is_relative_to(inside):
            raise BundleError(f"bundle manifest lists {rel!r}, outside the bundle directory")


@dataclass(frozen=True)
class BundleRef:
    """One registered bundle version."""

    name: str
    version: str

    @property
    def prefix(self) -> str:
        return f"bundles/{self.name}/{self.version}/"


class ArtifactStore:
    """Publish, assign and fetch signed bundles in one bucket."""

    def __init__(self, bucket: str, endpoint: str = "", *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint or None)
        self.bucket = bucket
        self._s3 = client

    def _get(self, key: str) -> bytes:
        try:
            return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self._s3.exceptions.NoSuchKey:
            raise NotFound(f"s3://{self.bucket}/{key} does not exist") from None
        except Exception as exc:
            if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
                raise Unavailable(f"object storage unreachable: {exc}") from exc
            raise

    def _exists(self, key: str) -> bool:
        resp = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        return any(o["Key"] == key for o in resp.get("Contents", []))

    def publish(self, root: Path, key: Ed25519PrivateKey) -> BundleRef:
        """Verify the bundle directory (manifest hashes), pack, sign and upload it as its
        manifest's name and version; refused when that version exists already."""
        bundle = load_bundle(root, verify=True)
        ref = BundleRef(_check("bundle name", bundle.manifest.name),
                        _check("bundle version", bundle.manifest.version))  # fmt: skip
        archive_key = ref.prefix + "bundle.tar"
        if self._exists(archive_key):
            raise InvalidArgument(
                f"bundle {ref.name} {ref.version} is registered already; versions are immutable"
            )
        archive = pack_bundle(root)
        signature = sign_bundle(key, ref.name, ref.version, archive)
        # the signature last: a reader that finds it finds the archive it signs
        self._s3.put_object(Bucket=self.bucket, Key=archive_key, Body=archive)
        self._s3.put_object(Bucket=self.bucket, Key=archive_key + ".sig", Body=signature)
        log.info("published bundle %s %s (%d bytes)", ref.name, ref.version, len(archive))
        return ref

    def versions(self, name: str) -> list[str]:
        """Registered versions of bundle ``name`` (those with a signature)."""
        prefix = f"bundles/{_check('bundle name', name)}/"
        found: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(prefix) :]
                if rest.endswith("/bundle.tar.sig"):
                    found.append(rest.split("/", 1)[0])
        return sorted(found)

    def names(self) -> list[str]:
        """Every registered bundle name."""
        resp = self._s3.list_objects_v2(Bucket=self.bucket, Prefix="bundles/", Delimiter="/")
        return sorted(p["Prefix"].split("/")[1] for p in resp.get("CommonPrefixes", []))

    def _size(self, key: str) -> int:
        try:
            resp = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception as exc:
            if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
                raise Unavailable(f"object storage unreachable: {exc}") from exc
            raise
        for obj in resp.get("Contents", []):
            if obj["Key"] == key:
                return int(obj["Size"])
        raise NotFound(f"s3://{self.bucket}/{key} does not exist")

    def fetch(
        self, ref: BundleRef, verify_key: Ed25519PublicKey, max_bytes: int = 2 << 30
    ) -> bytes:
        """The archive of ``ref``, its signature verified (BundleError when it does not); one
        over ``max_bytes`` (or a signature over 1 KiB) is refused before it is downloaded."""
        key = ref.prefix + "bundle.tar"
        for k, limit in ((key, max_bytes), (key + ".sig", 1024)):
            size = self._size(k)
            if size > limit:
                raise BundleError(
                    f"s3://{self.bucket}/{k} is {size} bytes (at most {limit}); not downloaded"
                )
        archive = self._get(key)
        signature = self._get(key + ".sig")
        if len(archive) > max_bytes:  # replaced between the listing and the download
            raise BundleError(f"bundle {ref.name} {ref.version} is over {max_bytes} bytes")
        verify_bundle(verify_key, ref.name, ref.version, archive, signature)
        return archive

    def install(
        self, ref: BundleRef, verify_key: Ed25519PublicKey, dest: Path, max_bytes: int = 2 << 30
    ) -> Path:
        """Fetch, verify (signature, then every file's hash against the manifest, each file
        inside the bundle), unpack into the new directory ``dest`` (moved into place only once
        all of it checked out); archives over ``max_bytes`` are refused unread."""
        archive = self.fetch(ref, verify_key, max_bytes)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{ref.name}-", dir=dest.parent))
        try:
            unpacked = unpack_bundle(archive, staging / "b", max_bytes)
            _check_contained(unpacked)
            bundle = load_bundle(unpacked, verify=True)
            m = bundle.manifest
            if (m.name, m.version) != (ref.name, ref.version):
                raise BundleError(
                    f"bundle registered as {ref.name} {ref.version} declares {m.name} {m.version}"
                )
            unpacked.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def assign(self, device_class: str, ref: BundleRef) -> None:
        """Devices of ``device_class`` are to run ``ref`` (which must be registered)."""
        _check("device class", device_class)
        if ref.version not in self.versions(ref.name):
            raise NotFound(f"bundle {ref.name} {ref.version} is not registered")
        body = json.dumps({"name": ref.name, "version": ref.version}).encode()
        self._s3.put_object(Bucket=self.bucket, Key=f"assignments/{device_class}.json", Body=body)

    def assignment(self, device_class: str) -> BundleRef | None:
        """What ``device_class`` is assigned (None: nothing yet); InvalidArgument for an
        assignment that is not one (over 4 KiB, not ``{"name": ..., "version": ...}``)."""
        key = f"assignments/{_check('device class', device_class)}.json"
        try:
            size = self._size(key)
        except NotFound:
            return None
        if size > MAX_ASSIGNMENT_BYTES:
            raise InvalidArgument(f"s3://{self.bucket}/{key} is {size} bytes; not an assignment")
        try:
            d = json.loads(self._get(key))
            name, version = d["name"], d["version"]
        except (ValueError, TypeError, KeyError):
            raise InvalidArgument(
                f's3://{self.bucket}/{key} is not {{"name": ..., "version": ...}}'
            ) from None
        if not isinstance(name, str) or not isinstance(version, str):
            raise InvalidArgument(f"s3://{self.bucket}/{key}: name and version must be strings")
        return BundleRef(_check("bundle name", name), _check("bundle version", version))


__all__ = ["ArtifactStore", "BundleRef"]
