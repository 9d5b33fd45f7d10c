"""Privacy controls both sides share: keyed pseudonyms for identifiers (device ids in telemetry,
logs and the metadata store). See docs/privacy.md."""

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

__all__ = [
    "DEVICE",
    "KEY_BYTES",
    "SESSION",
    "Pseudonymiser",
    "configure",
    "installed",
    "is_pseudonym",
    "parse_pseudonym_key",
    "pseudonymise_device",
]
