"""Drains the replay queue over the session stream, in queue order, each entry under its own
idempotency key (the gateway computes a key at most once, so an entry re-sent after a crash is
answered from the gateway's store and counted as a suppressed duplicate)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from typing import TYPE_CHECKING

from common.errors import AimlError, ErrorCode
from edge_agent._features import EncodedFeatures
from edge_agent._replay import ReplayEntry, ReplayQueue
from edge_agent._stream import SessionClient
from edge_agent._types import Reconciliation

if TYPE_CHECKING:
    from edge_agent._agent import EdgeAgent

log = logging.getLogger(__name__)

# The gateway will never accept these: the entry is removed and reported as failed.
_PERMANENT = {
    ErrorCode.INVALID_ARGUMENT,
    ErrorCode.ALREADY_EXISTS,
    ErrorCode.NOT_FOUND,
    ErrorCode.PERMISSION_DENIED,
    ErrorCode.FAILED_PRECONDITION,
    ErrorCode.DATA_LOSS,
}


def features_of(entry: ReplayEntry) -> EncodedFeatures:
    """The coded features stored in a replay entry."""
    m = entry.meta
    return EncodedFeatures(
        payload=entry.payload,
        codec=str(m["codec"]),
        dtype=str(m["dtype"]),
        shape=tuple(int(d) for d in m["shape"]),  # type: ignore[attr-defined]
        original_bytes=int(m["original_bytes"]),  # type: ignore[call-overload]
        crc32c=int(m["crc32c"]),  # type: ignore[call-overload]
        framed=bool(m.get("framed", True)),
    )


class ReplayWorker:
    """Background task owned by the agent: whenever the stream is up, drain the queue."""

    def __init__(self, agent: EdgeAgent, client: SessionClient, queue: ReplayQueue) -> None:
        self.agent = agent
        self.client = client
        self.queue = queue
        self._wake = asyncio.Event()
        self.rounds = 0

    def wake(self) -> None:
        """Something was queued: look again soon."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.client.wait_connected()
            left = await self.drain_once()
            self._wake.clear()
            # Entries that could not be delivered now are retried after a pause.
            pause = 0.5 if left else 2.0
            try:
                await asyncio.wait_for(self._wake.wait(), pause)
            except TimeoutError:
                pass

    async def drain_once(self) -> bool:
        """One pass over the queue; True when entries remain to retry."""
        self.rounds += 1
        st = self.agent.settings
        sem = asyncio.Semaphore(st.replay.concurrency)
        tasks: list[asyncio.Task[bool]] = []
        after = 0
        retry = False
        while self.client.connected:
            entries, reports = await self.agent._in_replay(
                functools.partial(self.queue.peek, st.replay.concurrency * 4, after)
            )
            for report in reports:
                self.agent.reconcile(report)
            if not entries:
                break
            for seq, entry in entries:
                after = seq
                await sem.acquire()
                if not self.client.connected:
                    sem.release()
                    retry = True
                    break
                tasks.append(asyncio.create_task(self._deliver(seq, entry, sem)))
            else:
                continue
            break
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return retry or any(r is not True for r in results)

    async def _deliver(self, seq: int, entry: ReplayEntry, sem: asyncio.Semaphore) -> bool:
        st = self.agent.settings
        try:
            out = self.agent.outbound(
                uuid.uuid4().hex,
                entry.idempotency_key,
                str(entry.meta["cut_point"]),
                features_of(entry),
                time.time() + st.replay.deadline_s,
                deferred=True,
            )
            # the features came from the head of the bundle queued with, maybe swapped out since
            meta = entry.meta
            out = dataclasses.replace(
                out,
                model_name=str(meta.get("model_name") or out.model_name),
                model_version=str(meta.get("model_version", out.model_version)),
            )
            fut = self.client.submit(out)
            try:
                answer = await asyncio.wait_for(fut, st.replay.deadline_s + 5.0)
            except TimeoutError:
                self.client.cancel(out.request_id)
                return False
            except AimlError as exc:
                if exc.code in _PERMANENT:
                    await self.agent._in_replay(lambda: self.queue.discard(seq))
                    self.agent.reconcile(
                        Reconciliation(
                            entry.entry_id,
                            entry.idempotency_key,
                            "failed",
                            detail=f"{exc.code.value}: {exc.message}",
                        )
                    )
                    return True
                log.info("replay of %s deferred again: %s", entry.idempotency_key, exc)
                return False
            await self.agent._in_replay(lambda: self.queue.ack(seq, duplicate=answer.cached))
            self.agent.reconcile(
                Reconciliation(
                    entry.entry_id,
                    entry.idempotency_key,
                    "delivered",
                    top_class=answer.top_class,
                    confidence=answer.confidence,
                    duplicate=answer.cached,
                )
            )
            return True
        finally:
            sem.release()


__all__ = ["ReplayWorker", "features_of"]
