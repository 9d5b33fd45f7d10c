"""Privacy controls both sides share: keyed pseudonyms for identifiers (device ids in telemetry,
logs and the metadata store), differential privacy on offloaded features (Gaussian mechanism,
per-device accountant), a PII scanner with redaction (DLP), and AES-256-GCM sealing under a
rotatable key ring for what is kept at rest. See docs/privacy.md."""

from ._dlp import KINDS, Finding, PiiScanner, Redactor
from ._dp import GaussianMechanism, PrivacyAccountant, noise_multiplier
from ._export import configure_export_redaction, export_redactor, redact_export
from ._pseudonym import (
    DEVICE,
    KEY_BYTES,
    REQUEST,
    SESSION,
    Pseudonymiser,
    configure,
    installed,
    is_pseudonym,
    parse_pseudonym_key,
    pseudonymise_device,
)
from ._sealing import KeyRing, is_sealed
from ._settings import DpOverride, FeaturePrivacySettings

__all__ = [
    "DEVICE",
    "KEY_BYTES",
    "KINDS",
    "REQUEST",
    "SESSION",
    "DpOverride",
    "FeaturePrivacySettings",
    "Finding",
    "GaussianMechanism",
    "KeyRing",
    "PiiScanner",
    "PrivacyAccountant",
    "Pseudonymiser",
    "Redactor",
    "configure",
    "configure_export_redaction",
    "export_redactor",
    "installed",
    "is_pseudonym",
    "is_sealed",
    "noise_multiplier",
    "parse_pseudonym_key",
    "pseudonymise_device",
    "redact_export",
]
