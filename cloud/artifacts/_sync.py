"""Loading the gateway's models from S3-compatible storage (see :mod:`cloud.artifacts`)."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from common.artifacts import ArtifactStore, BundleRef, load_verify_key
from common.settings import Section

log = logging.getLogger(__name__)


class ArtifactSettings(Section):
    """Signed model bundles in S3-compatible object storage (section ``artifacts``)."""

    bucket: str = ""
    """Bucket of signed bundles (``aiml021 artifacts publish``); empty: serve ``models_dir`` as
    it is, nothing is downloaded."""
    endpoint: str = ""
    """S3 endpoint URL (MinIO: ``http://minio:9000``); empty: AWS S3. Credentials come as boto3
    finds them (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a role)."""
    verify_key: Path = Path("certs/bundle-signing.pub")
    """Ed25519 public key (PEM) every bundle must be signed with; a bundle that does not verify
    is not installed and start-up fails naming it."""
    models: list[str] = Field(default_factory=list)
    """Bundle names to load, every registered version of each; empty: every bundle."""


def sync_models(
    s: ArtifactSettings, models_dir: Path, store: ArtifactStore | None = None
) -> list[BundleRef]:
    """Install into ``models_dir/<name>-<version>`` every registered version of the configured
    bundles that is not there yet (verified: signature, then each file's hash); returns what
    was installed. A version already installed is left as it is (versions are immutable)."""
    store = store or ArtifactStore(s.bucket, s.endpoint)
    key = load_verify_key(s.verify_key.read_bytes())
    installed: list[BundleRef] = []
    for name in s.models or store.names():
        for version in store.versions(name):
            ref = BundleRef(name, version)
            dest = models_dir / f"{name}-{version}"
            if dest.exists():
                continue
            store.install(ref, key, dest)
            installed.append(ref)
            log.info("installed bundle %s %s from s3://%s", name, version, s.bucket)
    return installed


__all__ = ["ArtifactSettings", "sync_models"]
