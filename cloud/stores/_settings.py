"""Settings and factory for the gateway's stores (env prefix ``AIML021_STORES_``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._cache import MemoryResultCache, RedisResultCache, ResultCache
from ._idempotency import IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore
from ._metadata_sql import MetadataBackend, PostgresMetadataBackend, SqliteMetadataBackend
from ._records import PriceTable
from ._writer import MetadataWriter


class StoreSettings(BaseSettings):
    """Where idempotency keys, cached results and request metadata live."""

    model_config = SettingsConfigDict(env_prefix="AIML021_STORES_", env_nested_delimiter="__")

    backend: Literal["memory", "redis"] = "memory"
    """Idempotency store and result cache: ``memory`` (one replica) or ``redis`` (shared)."""
    redis_url: str = ""
    """Redis URL when ``backend`` is ``redis``, e.g. ``redis://127.0.0.1:6379/0``."""
    idempotency_ttl_s: float = Field(default=86400.0, gt=0)
    """How long a completed idempotency key keeps returning its stored result."""
    idempotency_pending_ttl_s: float = Field(default=60.0, gt=0)
    """How long a claim on a key survives a replica that crashed while computing it."""
    idempotency_wait_s: float = Field(default=30.0, gt=0)
    """How long a duplicate waits for another replica's in-progress computation."""
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    """Default time to live of result cache entries."""
    cache_max_entries: int = Field(default=10_000, ge=1)
    """Capacity of the in-memory result cache."""
    metadata_url: str = "sqlite:///aiml021-metadata.sqlite3"
    """``sqlite:///PATH``, ``sqlite:///:memory:``, ``postgresql://...`` or ``none``."""
    metadata_buffer: int = Field(default=10_000, ge=1)
    """Records buffered for the database before new ones are dropped (and counted)."""
    metadata_batch: int = Field(default=500, ge=1)
    """Records written per transaction."""
    metadata_flush_interval_s: float = Field(default=0.2, gt=0)
    """Longest time a record waits in the buffer when traffic is light."""
    prices: PriceTable = Field(default_factory=PriceTable)
    """Price table for request costs (``AIML021_STORES_PRICES__PER_GB_IN`` etc.)."""

    @model_validator(mode="after")
    def _check(self) -> StoreSettings:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError(
                "AIML021_STORES_REDIS_URL is required when AIML021_STORES_BACKEND=redis"
            )
        url = self.metadata_url
        if not (url == "none" or url.startswith(("sqlite:///", "postgresql://", "postgres://"))):
            raise ValueError(
                "AIML021_STORES_METADATA_URL must be sqlite:///PATH, postgresql://... or none"
            )
        return self


@dataclass
class Stores:
    """The stores one gateway process uses; ``close`` releases them all."""

    idempotency: IdempotencyStore
    cache: ResultCache
    metadata: MetadataWriter | None

    async def start(self) -> None:
        """Start the metadata writer's flush task."""
        if self.metadata is not None:
            await self.metadata.start()

    async def close(self) -> None:
        """Flush metadata (bounded) and close connections."""
        if self.metadata is not None:
            await self.metadata.stop()
            await self.metadata.backend.close()
        await self.idempotency.close()
        await self.cache.close()


def metadata_backend(url: str, prices: PriceTable | None = None) -> MetadataBackend:
    """The backend for a metadata URL (see :attr:`StoreSettings.metadata_url`)."""
    if url.startswith("sqlite:///"):
        return SqliteMetadataBackend(url.removeprefix("sqlite:///"), prices)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresMetadataBackend(url, prices)
    raise ValueError(f"unsupported metadata URL {url!r}")


def build_stores(settings: StoreSettings | None = None) -> Stores:
    """Create (not yet start) the stores ``settings`` describe."""
    s = settings or StoreSettings()
    idem: IdempotencyStore
    cache: ResultCache
    if s.backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(s.redis_url)
        idem = RedisIdempotencyStore(
            client,
            ttl_s=s.idempotency_ttl_s,
            pending_ttl_s=s.idempotency_pending_ttl_s,
            wait_timeout_s=s.idempotency_wait_s,
        )
        cache = RedisResultCache(aioredis.Redis.from_url(s.redis_url), default_ttl_s=s.cache_ttl_s)
    else:
        idem = MemoryIdempotencyStore(
            ttl_s=s.idempotency_ttl_s, pending_ttl_s=s.idempotency_pending_ttl_s
        )
        cache = MemoryResultCache(default_ttl_s=s.cache_ttl_s, max_entries=s.cache_max_entries)
    writer = None
    if s.metadata_url != "none":
        writer = MetadataWriter(
            metadata_backend(s.metadata_url, s.prices),
            max_buffer=s.metadata_buffer,
            max_batch=s.metadata_batch,
            flush_interval_s=s.metadata_flush_interval_s,
        )
    return Stores(idempotency=idem, cache=cache, metadata=writer)
