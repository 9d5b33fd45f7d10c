"""Gateway stores: idempotency keys and result cache (memory or Redis), request metadata
(SQLite or PostgreSQL, written in batches off the request path). See docs/integrations.md."""

from ._cache import (
    CacheEntry,
    MemoryResultCache,
    RedisResultCache,
    ResultCache,
    check_cache_key,
    decode_entry,
    encode_entry,
)
from ._hooks import (
    DataPlaneCache,
    DataPlaneIdempotency,
    MetadataSinkAdapter,
    TelemetrySinkAdapter,
    decode_result,
    encode_result,
)
from ._idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    Reservation,
    payload_digest,
)
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
    RequestRecord,
    SessionEvent,
)
from ._serde import decode_tensors, encode_tensors
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
    "CacheSettings",
    "IdempotencySettings",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "CacheEntry",
    "DataPlaneCache",
    "DataPlaneIdempotency",
    "DeviceSeen",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "MemoryResultCache",
    "MetadataBackend",
    "MetadataSinkAdapter",
    "MetadataWriter",
    "PostgresMetadataBackend",
    "PriceTable",
    "Record",
    "RedisIdempotencyStore",
    "RedisResultCache",
    "RequestRecord",
    "Reservation",
    "ResultCache",
    "SessionEvent",
    "SqliteMetadataBackend",
    "StoreSettings",
    "Stores",
    "TelemetrySinkAdapter",
    "build_stores",
    "check_cache_key",
    "decode_entry",
    "decode_result",
    "decode_tensors",
    "encode_entry",
    "encode_result",
    "encode_tensors",
    "metadata_backend",
    "payload_digest",
]
