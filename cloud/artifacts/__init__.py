"""The gateway's side of bundles in object storage: which bundles it loads from the bucket
(section ``artifacts``) and :func:`sync_models`, which installs every registered version of them
(signature and hashes verified) into ``models_dir`` before the gateway scans it, so a device on an
older head still finds the matching tail."""

from cloud.artifacts._sync import ArtifactSettings, sync_models

__all__ = ["ArtifactSettings", "sync_models"]
