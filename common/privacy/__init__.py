"""Privacy controls both sides share: keyed pseudonyms for identifiers (device ids in telemetry,
logs and the metadata store), differential privacy on offloaded features (Gaussian mechanism,
per-device accountant). See docs/privacy.md."""

from ._dp import GaussianMechanism, PrivacyAccountant, noise_multiplier
from ._pseudonym import (
    DEVICE,
    KEY_BYTES,
    SESSION,
    Pseudonymiser,
    configure,
    installed,
    is_pseudonym,
    parse_pseudonym_key,
    pseudonymise_device,
)
from ._settings import DpOverride, FeaturePrivacySettings

__all__ = [
    "DEVICE",
    "KEY_BYTES",
    "SESSION",
    "DpOverride",
    "FeaturePrivacySettings",
    "GaussianMechanism",
    "PrivacyAccountant",
    "Pseudonymiser",
    "configure",
    "installed",
    "is_pseudonym",
    "noise_multiplier",
    "parse_pseudonym_key",
    "pseudonymise_device",
]
