"""Settings sections of the gateway's stores (``stores``, ``idempotency``, ``cache``) and the
factory that builds the stores from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from cloud.core import IdempotencyStore, ResultCache
from common.privacy import KeyRing
from common.settings import Section

from ._cache import MemoryResultCache, RedisResultCache
from ._idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from ._metadata_sql import MetadataBackend, PostgresMetadataBackend, SqliteMetadataBackend
from ._records import PriceTable
from ._sealed import SealedRedis
from ._writer import MetadataWriter


class IdempotencySettings(Section):
    """How long idempotency keys are kept, and how many (gateway section ``idempotency``)."""

    entries: int = Field(default=100_000, ge=1)
    """Keys kept by the in-memory store (the oldest go first); Redis keeps them by TTL only."""
    ttl_s: float = Field(default=86400.0, gt=0)
    """How long a completed idempotency key keeps returning its stored result."""
    pending_ttl_s: float = Field(default=60.0, gt=0)
    """How long a claim on a key survives a replica that crashed while computing it. A live
    replica renews its Redis claims every third of this while the request queues or computes,
    so it can be short (seconds) for fast recovery after a crash."""
    wait_s: float = Field(default=30.0, gt=0)
    """How long a duplicate waits for another replica's in-progress computation."""


class CacheSettings(Section):
    """The gateway's result cache (section ``cache``): what it answers and how much it keeps."""

    entries: int = Field(default=10_000, ge=1)
    """Most results the in-memory cache keeps (Redis keeps them by TTL only)."""
    ttl_s: float = Field(default=3600.0, gt=0)
    """Seconds a cached result stays valid."""
    full_models: bool = True
    """Answer repeated inputs of full models from the cache (model, version, content hash)."""
    tail_segments: bool = False
    """Also cache tail-segment (offloaded feature) requests; their inputs rarely repeat."""
    kserve: bool = False
    """Also answer KServe-v2/Triton-protocol requests (ModelInfer, ModelStreamInfer, /v2 REST
    infer) from the cache. Off by default, as Triton's response cache is opt-in: perf_analyzer
    and other benchmark clients repeat one input and would otherwise measure the cache."""


class StoreSettings(Section):
    """Where idempotency keys, cached results and request metadata live (section ``stores``)."""

    backend: Literal["memory", "redis"] = "memory"
    """Idempotency store and result cache: ``memory`` (one replica) or ``redis`` (shared)."""
    redis_url: str = ""
    """Redis URL when ``backend`` is ``redis``, e.g. ``redis://127.0.0.1:6379/0``."""
    metadata_url: str = "sqlite:///aiml021-metadata.sqlite3"
    """``sqlite:///PATH``, ``sqlite:///:memory:``, ``postgresql://...`` or ``none``."""
    metadata_buffer: int = Field(default=10_000, ge=1)
    """Records buffered for the database before new ones are dropped (and counted)."""
    metadata_batch: int = Field(default=500, ge=1)
    """Records written per transaction."""
    metadata_flush_interval_s: float = Field(default=0.2, gt=0)
    """Longest time a record waits in the buffer when traffic is light."""
    prices: PriceTable = Field(default_factory=PriceTable)
    """Price table for request costs (``stores.prices.per_gb_in`` etc.)."""

    @model_validator(mode="after")
    def _check(self) -> StoreSettings:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("stores.redis_url is required when stores.backend is redis")
        url = self.metadata_url
        if not (url == "none" or url.startswith(("sqlite:///", "postgresql://", "postgres://"))):
            raise ValueError("stores.metadata_url must be sqlite:///PATH, postgresql://... or none")
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


def metadata_backend(
    url: str, prices: PriceTable | None = None, keyring: KeyRing | None = None
) -> MetadataBackend:
    """The backend for a metadata URL (see :attr:`StoreSettings.metadata_url`); with
    ``keyring`` the rows' content columns are sealed."""
    if url.startswith("sqlite:///"):
        return SqliteMetadataBackend(url.removeprefix("sqlite:///"), prices, keyring)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresMetadataBackend(url, prices, keyring=keyring)
    raise ValueError(f"unsupported metadata URL {url!r}")


def build_stores(
    settings: StoreSettings | None = None,
    idempotency: IdempotencySettings | None = None,
    cache_settings: CacheSettings | None = None,
    keyring: KeyRing | None = None,
) -> Stores:
    """Create (not yet start) the stores ``settings`` describe (defaults where None); with
    ``keyring``, what the Redis stores keep is sealed with AES-256-GCM (:class:`SealedRedis`),
    and so are the content columns of the metadata database's rows."""
    s = settings or StoreSettings()
    ids = idempotency or IdempotencySettings()
    cs = cache_settings or CacheSettings()
    idem: IdempotencyStore
    cache: ResultCache
    if s.backend == "redis":
        import redis.asyncio as aioredis

        def client() -> Any:
            plain = aioredis.Redis.from_url(s.redis_url)
            return plain if keyring is None else SealedRedis(plain, keyring)

        idem = RedisIdempotencyStore(
            client(),
            ttl_s=ids.ttl_s,
            pending_ttl_s=ids.pending_ttl_s,
            wait_timeout_s=ids.wait_s,
        )
        cache = RedisResultCache(client(), default_ttl_s=cs.ttl_s)
    else:
        idem = MemoryIdempotencyStore(
            ttl_s=ids.ttl_s, pending_ttl_s=ids.pending_ttl_s, max_keys=ids.entries
        )
        cache = MemoryResultCache(default_ttl_s=cs.ttl_s, max_entries=cs.entries)
    writer = None
    if s.metadata_url != "none":
        writer = MetadataWriter(
            metadata_backend(s.metadata_url, s.prices, keyring),
            max_buffer=s.metadata_buffer,
            max_batch=s.metadata_batch,
            flush_interval_s=s.metadata_flush_interval_s,
        )
    return Stores(idempotency=idem, cache=cache, metadata=writer)
