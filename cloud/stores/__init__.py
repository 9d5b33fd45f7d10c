"""Gateway stores, implementing the core's store Protocols (``cloud.core.IdempotencyStore``,
``ResultCache``, ``MetadataSink``, ``TelemetrySink``): idempotency keys and result cache (memory or
Redis), request metadata (SQLite or PostgreSQL, written in batches off the request path by
:class:`MetadataWriter`, the metadata and telemetry sink) and the hash-chained audit trail
(:class:`AuditLog`). See docs/integrations.md."""

from ._audit import (
    AuditBackend,
    AuditFilter,
    AuditLog,
    AuditRow,
    PostgresAuditBackend,
    SqliteAuditBackend,
    Verdict,
    audit_backend,
    audit_log,
    verify,
    verify_chain,
)
from ._cache import MemoryResultCache, RedisResultCache, check_cache_key
from ._idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from ._metadata_sql import (
    TABLES,
    MetadataBackend,
    PostgresMetadataBackend,
    SqliteMetadataBackend,
)
from ._records import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DeviceSeen,
    PriceTable,
    Record,
    SessionEvent,
    telemetry_record,
)
from ._sealed import SealedRedis
from ._serde import (
    decode_entry,
    decode_result,
    decode_tensors,
    encode_entry,
    encode_result,
    encode_tensors,
)
from ._settings import (
    CacheSettings,
    IdempotencySettings,
    Stores,
    StoreSettings,
    build_stores,
    metadata_backend,
)
from ._writer import MetadataWriter

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "AuditBackend",
    "AuditFilter",
    "AuditLog",
    "AuditRow",
    "CacheSettings",
    "DeviceSeen",
    "IdempotencySettings",
    "MemoryIdempotencyStore",
    "MemoryResultCache",
    "MetadataBackend",
    "MetadataWriter",
    "PostgresAuditBackend",
    "PostgresMetadataBackend",
    "PriceTable",
    "Record",
    "RedisIdempotencyStore",
    "RedisResultCache",
    "SealedRedis",
    "SessionEvent",
    "SqliteAuditBackend",
    "SqliteMetadataBackend",
    "StoreSettings",
    "Stores",
    "Verdict",
    "audit_backend",
    "audit_log",
    "build_stores",
    "check_cache_key",
    "decode_entry",
    "decode_result",
    "decode_tensors",
    "encode_entry",
    "encode_result",
    "encode_tensors",
    "metadata_backend",
    "telemetry_record",
    "verify",
    "verify_chain",
]
