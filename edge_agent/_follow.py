"""The running agent follows the bundle assigned to its device class (section ``artifacts``).

Every ``check_interval_s`` :class:`BundleFollower` asks the :class:`BundleUpdater` to install the
assigned bundle (downloaded only under the size limit; Ed25519 signature, then every file's
SHA-256 checked; probed on zero inputs). A bundle that passed is built in a thread, then the
session says Hello again declaring its version (the stream first finishes the requests sent on
it); only once the gateway welcomes it does the agent swap its head: requests in flight finish on
the old bundle, new ones start on the new one. The gateway refusing the version
(FAILED_PRECONDITION) rolls the updater back and the agent keeps its bundle. A bundle that fails
in service (its head raises, or an exit gives non-finite outputs) is rolled back to the last
known good one, which answers the request again; so is one the gateway refuses at a reconnect.
Every outcome is logged and counted (:class:`BundleMetrics`, in ``EdgeAgent.metrics()["bundle"]``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from common.artifacts import ArtifactStore, BundleUpdater, UpdateResult, load_verify_key
from common.errors import AimlError, FailedPrecondition, InvalidArgument, Unavailable
from edge_agent._loaded import LoadedBundle
from edge_agent._settings import ArtifactsSettings, EdgeSettings
from edge_agent._stream import SessionClient

log = logging.getLogger(__name__)


def bundle_updater(settings: EdgeSettings) -> BundleUpdater | None:
    """The updater of ``artifacts.root`` following ``device_class``'s assignment (None when
    ``artifacts.bucket`` is not set). Storage calls time out in seconds, not minutes: a
    device keeps answering while its bucket is unreachable."""
    a = settings.artifacts
    if not a.bucket or a.root is None:
        return None
    try:
        key = load_verify_key(a.verify_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"artifacts.verify_key {a.verify_key}: {exc}") from None
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=a.endpoint or None,
        config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2}),
    )
    store = ArtifactStore(a.bucket, a.endpoint, client=client)
    return BundleUpdater(store, key, settings.device_class, a.root, max_bytes=a.max_bundle_bytes)


@dataclasses.dataclass
class BundleMetrics:
    """What following the assignment did."""

    current: str = ""
    """The bundle the agent runs (``<name>-<version>``; empty: the one it started with)."""
    checks: int = 0
    swaps: int = 0
    rejected: int = 0
    """Assigned bundles refused before use (download limit, signature, hashes, probe)."""
    refused: int = 0
    """Bundles the gateway refused at Hello (FAILED_PRECONDITION) or did not confirm in time."""
    rollbacks: int = 0
    """Swapped-in bundles that failed in service and were replaced by the last known good."""
    last_error: str = ""


class BundleFollower:
    """Keeps the agent on its class's assigned bundle (see module doc). ``current()`` is the
    bundle the agent runs, ``build(path)`` builds one (blocking, run in a thread),
    ``swap(loaded)`` makes it the agent's; ``client`` (None offline) renegotiates Hello."""

    def __init__(
        self,
        updater: BundleUpdater,
        settings: ArtifactsSettings,
        *,
        current: Callable[[], LoadedBundle],
        build: Callable[[Path], LoadedBundle],
        swap: Callable[[LoadedBundle], None],
    ) -> None:
        self.updater = updater
        self.settings = settings
        self.client: SessionClient | None = None
        self.metrics = BundleMetrics(current=updater.current.name if updater.current else "")
        self._current = current
        self._build = build
        self._swap = swap
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, first_after: float = 0.0) -> None:
        """Check after ``first_after`` seconds, then every ``check_interval_s``, until
        cancelled (which also cancels a rollback in progress)."""
        try:
            await asyncio.sleep(first_after)
            while True:
                try:
                    await self.check()
                except Exception as exc:  # storage down, ...: the agent runs on
                    self._error(f"assignment check failed: {exc}")
                await asyncio.sleep(self.settings.check_interval_s)
        finally:
            for task in self._background:
                task.cancel()

    async def check(self) -> UpdateResult | None:
        """Follow the assignment once; None when skipped (the session is down: a new version
        is taken only while the gateway can confirm it)."""
        client = self.client
        if client is not None and not client.connected:
            return None
        async with self._lock:
            self.metrics.checks += 1
            bad = len(self.updater.bad)
            result = await asyncio.to_thread(self.updater.check)
            self.metrics.rejected += len(self.updater.bad) - bad
            if result.error:
                self._error(result.error)
            if not result.swapped:
                return result
            path = self.updater.current
            assert path is not None
            try:
                loaded = await asyncio.to_thread(self._build, path)
            except Exception as exc:
                await self._back(f"{result.current} does not load: {exc}", refused=False)
                return result
            if client is not None:
                declared = [(loaded.model_name, loaded.model_version)]
                try:
                    await client.renegotiate(declared, self.settings.negotiate_timeout_s)
                except (FailedPrecondition, Unavailable) as exc:
                    loaded.retire()
                    # Not confirmed in time is not the bundle's fault: tried again next check.
                    await self._back(
                        f"gateway did not take {loaded.label}: {exc}",
                        refused=True,
                        retry=isinstance(exc, Unavailable),
                    )
                    return result
            self._swap(loaded)
            self.metrics.swaps += 1
            self.metrics.current = result.current
            log.info("bundle %s swapped in (last good %s)", loaded.label, self.updater.last_good)
            return result

    async def failed_in_service(self, loaded: LoadedBundle, exc: BaseException) -> bool:
        """``loaded`` raised while answering a request: go back to the last known good bundle.
        True when the request may run again on the agent's bundle now (it changed), False when
        there is nothing to go back to."""
        if isinstance(exc, AimlError) or not isinstance(exc, Exception):
            return False
        async with self._lock:
            if loaded is not self._current():
                return True  # rolled back already (another request failed first)
            why = f"{loaded.label} failed in service: {type(exc).__name__}: {exc}"
            return await self._roll_back(loaded, why)

    def refused(self, exc: FailedPrecondition) -> None:
        """The gateway refused the session's Hello outside a swap (e.g. it restarted without
        the tail of the bundle the agent runs): go back to the last known good bundle."""
        loaded = self._current()

        async def roll_back() -> None:
            async with self._lock:
                if loaded is self._current():
                    await self._roll_back(loaded, f"gateway refuses {loaded.label}: {exc}")

        self._in_background(roll_back())

    async def _roll_back(self, loaded: LoadedBundle, why: str) -> bool:
        """Replace ``loaded`` (the agent's bundle) by the last known good one; False when
        there is none (or it does not load). Called holding the lock."""
        if loaded.path is None or not self.updater.last_good:
            self._error(f"{why}; no last known good bundle to go back to")
            return False
        good = await asyncio.to_thread(self.updater.report_failure, why)
        try:
            previous = await asyncio.to_thread(self._build, self.root / "versions" / good)
        except Exception as build_exc:
            self._error(f"last known good {good} does not load either: {build_exc}")
            return False
        self._swap(previous)
        self.metrics.rollbacks += 1
        self.metrics.current = good
        self._error(f"{why}; rolled back to {good}")
        if self.client is not None:
            self._in_background(self._declare(previous))
        return True

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def root(self) -> Path:
        return self.updater.root

    async def _declare(self, loaded: LoadedBundle) -> None:
        assert self.client is not None
        try:
            await self.client.renegotiate(
                [(loaded.model_name, loaded.model_version)], self.settings.negotiate_timeout_s
            )
        except AimlError as exc:
            self._error(f"gateway did not take the last known good {loaded.label}: {exc}")

    async def _back(self, why: str, *, refused: bool, retry: bool = False) -> None:
        """The bundle just installed is not used: the updater returns to the previous one."""
        now = await asyncio.to_thread(self.updater.report_failure, why, retry)
        self.metrics.refused += int(refused)
        self.metrics.rejected += int(not refused)
        self.metrics.current = now
        self._error(f"{why}; staying on {now or 'the bundle the agent started with'}")

    def _error(self, message: str) -> None:
        if message != self.metrics.last_error:  # once, not at every check
            log.error("bundle: %s", message)
        self.metrics.last_error = message


__all__ = ["BundleFollower", "BundleMetrics", "bundle_updater"]
