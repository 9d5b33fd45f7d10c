"""Model bundles in object storage: deterministic archives, Ed25519 signatures made at
registration and checked before anything is unpacked, an S3-compatible store (publish, assign to
a device class, fetch, install) and the device-side updater that swaps in the assigned bundle and
rolls back to the last known good one. See docs/scale-out.md."""

from common.artifacts._archive import MAX_MEMBERS, pack_bundle, unpack_bundle
from common.artifacts._signing import (
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    sign_bundle,
    statement,
    verify_bundle,
)
from common.artifacts._store import ArtifactStore, BundleRef
from common.artifacts._updater import BundleUpdater, UpdateResult, probe_bundle

__all__ = [
    "MAX_MEMBERS",
    "ArtifactStore",
    "BundleRef",
    "BundleUpdater",
    "UpdateResult",
    "generate_signing_key",
    "load_signing_key",
    "load_verify_key",
    "pack_bundle",
    "probe_bundle",
    "sign_bundle",
    "statement",
    "unpack_bundle",
    "verify_bundle",
]
