"""The session protocol as a state machine (hypothesis): random frame sequences — headers (some
over the limits, some inline), chunks in and out of order, past their credit, for finished or
unknown requests, duplicate request ids, cancels, slow computations, reassembly timeouts and
disconnects — against SessionCore in-process, two sessions of one device sharing its quotas.

Invariants: every request ends with exactly one result or error (none once the device cancelled
it or its session closed while it was open); answers to frames that belong to no open request
(a chunk for an unknown or finished request, a duplicate header) are extra, one per frame at
most; a session's byte credit plus what it owes the device is always its initial credit; once
everything is answered and the sessions closed, the device's ledger, the global budget and the
event loop are empty (no request, byte, timer or task left behind).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloud.core import (
    ByteBudget,
    Chunk,
    DeviceQuota,
    DeviceQuotas,
    SessionCore,
    SessionLimits,
)
from tests.unit.cloud._session_plane import ROW, RecordingSink, header, session_plane

LIMITS = SessionLimits(
    max_request_bytes=64,
    max_chunk_bytes=16,
    max_inflight_requests=4,
    max_session_buffer_bytes=64,
    reassembly_timeout_s=0.03,
    ping_interval_s=20.0,
)
PICKS = st.sampled_from([0, 0, 0, 1, 2, 7])
TOTALS = st.sampled_from([16, 16, 16, 32, 80])
"""16: a valid request; 32: decodes to the wrong size; 80: over max_request_bytes."""


class _Session:
    def __init__(self, core: SessionCore, sink: RecordingSink) -> None:
        self.core = core
        self.sink = sink
        self.sent: dict[str, int] = {}  # rid -> payload bytes sent so far
        self.totals: dict[str, int] = {}


class SessionProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dp, self.backend = self.loop.run_until_complete(session_plane())
        self.dp_closed = False
        self.quotas = DeviceQuotas(
            DeviceQuota(max_sessions=2, max_inflight=6, max_buffered_bytes=96, requests_per_s=0),
            ByteBudget(128),
        )
        self.ids = itertools.count()
        self.sessions = [self._open() for _ in range(2)]
        self.headers: list[tuple[_Session, str]] = []
        self.silenced: set[str] = set()  # cancelled or disconnected while open: no answer due
        self.extra: Counter[str] = Counter()  # answers to frames of no open request
        self.frames_for: Counter[str] = Counter()  # frames sent that may earn an extra answer

    def _open(self) -> _Session:
        sink = RecordingSink()
        n = next(self.ids)
        ledger = self.quotas.open_session("cam")
        core = SessionCore(self.dp, LIMITS, self.quotas.budget, sink, "cam", f"s{n}", ledger)
        return _Session(core, sink)

    def _do(self, frame: Callable[[], object]) -> None:
        """Feed one frame to the core between two steps of the loop: callbacks that are due
        (a computation's answer, a timer) have not run yet, as when the transport's reader is
        scheduled before them."""
        asyncio.events._set_running_loop(self.loop)
        try:
            frame()
        finally:
            asyncio.events._set_running_loop(None)

    def _settle(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))
        for _ in range(5):  # batcher -> backend -> done callbacks
            self.loop.run_until_complete(asyncio.sleep(0))

    def _answers(self, s: _Session, rid: str) -> int:
        return s.sink.answers(rid)

    def _open_now(self, s: _Session, rid: str) -> bool:
        """Whether ``rid`` is a request of ``s`` still waiting for its answer (the device's view)."""
        return (
            rid in s.totals
            and rid not in self.silenced
            and self._answers(s, rid) - self.extra[rid] == 0
        )

    def _stray(self, s: _Session, rid: str, send: Callable[[], object]) -> None:
        """Send (inside the loop) a frame that belongs to no open request: its answer, if any,
        comes at once and is extra."""
        before = self._answers(s, rid)
        send()
        self.extra[rid] += self._answers(s, rid) - before
        self.frames_for[rid] += 1

    def _pick(self, s: _Session, pick: int) -> str | None:
        """One of the session's requests, the newest most often (0 = the newest)."""
        rids = list(s.totals)
        return rids[-1 - pick % len(rids)] if rids else None

    # -- frames (each delivered inside the loop, where it is decided what it belongs to) ------

    @rule(which=st.integers(0, 1), total=TOTALS, inline=st.booleans())
    def new_request(self, which: int, total: int, inline: bool) -> None:
        s = self.sessions[which]
        rid = f"r{next(self.ids)}"
        h = header(rid, total)
        if inline and total <= LIMITS.max_chunk_bytes:
            h.inline_payload = ROW
        s.sent[rid] = len(h.inline_payload)
        s.totals[rid] = total
        self.headers.append((s, rid))
        self._do(lambda: s.core.on_header(h))

    @rule(which=st.integers(0, 1), pick=PICKS)
    def duplicate_header(self, which: int, pick: int) -> None:
        s = self.sessions[which]
        if (rid := self._pick(s, pick)) is None:
            return

        def deliver() -> None:
            if self._open_now(s, rid):  # ALREADY_EXISTS for the duplicate; the original goes on
                self._stray(s, rid, lambda: s.core.on_header(header(rid, s.totals[rid])))

        self._do(deliver)

    @rule(
        which=st.integers(0, 1),
        pick=PICKS,
        size=st.integers(1, 20),
        shift=st.sampled_from([0, 0, 0, -4, 4]),
        last=st.booleans(),
    )
    def chunk(self, which: int, pick: int, size: int, shift: int, last: bool) -> None:
        s = self.sessions[which]
        if (rid := self._pick(s, pick)) is None:
            return
        offset = max(0, s.sent[rid] + shift)
        c = Chunk(rid, offset, (ROW * 2)[:size], last)

        def deliver() -> None:
            if self._open_now(s, rid):
                s.sent[rid] = offset + size
                s.core.on_chunk(c)
            else:
                self._stray(s, rid, lambda: s.core.on_chunk(c))

        self._do(deliver)

    @rule(which=st.integers(0, 1))
    def chunk_for_unknown_request(self, which: int) -> None:
        s = self.sessions[which]
        rid = f"u{next(self.ids)}"
        self._do(lambda: self._stray(s, rid, lambda: s.core.on_chunk(Chunk(rid, 0, ROW, True))))

    @rule(which=st.integers(0, 1), pick=PICKS)
    def cancel(self, which: int, pick: int) -> None:
        s = self.sessions[which]
        if (rid := self._pick(s, pick)) is None:
            return

        def deliver() -> None:
            if self._open_now(s, rid):
                self.silenced.add(rid)
            s.core.on_cancel(rid)  # a cancel is never answered

        self._do(deliver)

    @rule(which=st.integers(0, 1))
    def disconnect_and_reconnect(self, which: int) -> None:
        s = self.sessions[which]

        def deliver() -> None:
            self.silenced.update(rid for rid in s.totals if self._open_now(s, rid))
            s.core.close()
            s.core._ledger.close_session()  # what the transport does after close()

        self._do(deliver)
        self.sessions[which] = self._open()

    # -- time and the backend ----------------------------------------------------------------

    @precondition(lambda self: not self.backend._held)
    @rule()
    def backend_slows_down(self) -> None:
        self.backend.hold()

    @rule()
    def backend_catches_up(self) -> None:
        self.backend.release()
        self._settle()

    @rule(turns=st.sampled_from([1, 1, 1, 2, 3, 6]))
    def loop_turns(self, turns: int) -> None:
        """Frames arrive between any two steps of the loop (batcher, backend, callbacks)."""
        for _ in range(turns):  # exactly one iteration of the loop each
            self.loop.call_soon(self.loop.stop)
            self.loop.run_forever()

    @rule()
    def time_passes(self) -> None:
        self._settle(LIMITS.reassembly_timeout_s * 1.5)  # reassembly timers fire

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def credit_is_conserved(self) -> None:
        for s in self.sessions:
            c = s.core
            assert c._credit_left + c._grant_bytes == LIMITS.max_session_buffer_bytes

    @invariant()
    def no_request_is_answered_twice(self) -> None:
        for s, rid in self.headers:
            own = self._answers(s, rid) - self.extra[rid]
            assert own <= (0 if rid in self.silenced else 1), (rid, s.sink)
            assert self.extra[rid] <= self.frames_for[rid]

    @invariant()
    def device_ledger_matches_its_sessions(self) -> None:
        ledger = self.quotas.ledger("cam")
        assert ledger is not None
        assert ledger.inflight == sum(s.core.inflight for s in self.sessions)
        assert ledger.buffered == sum(s.core.buffered_bytes for s in self.sessions)
        assert self.quotas.budget.used == ledger.buffered

    def teardown(self) -> None:
        try:
            self.backend.release()
            self._settle()  # callbacks already due run first
            for _ in range(50):  # every accepted request gets its answer
                if not any(s.core.inflight for s in self.sessions):
                    break
                self._settle(LIMITS.reassembly_timeout_s)
            for s in self.sessions:
                self._do(s.core.close)
                s.core._ledger.close_session()
            assert self.quotas.connected_devices == 0 and self.quotas.budget.used == 0
            self.loop.run_until_complete(self.dp.close())
            self.dp_closed = True
            self._settle()
            left = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            assert not left, f"tasks left behind: {left}"
            for s, rid in self.headers:  # nothing more can arrive now
                own = self._answers(s, rid) - self.extra[rid]
                assert own == (0 if rid in self.silenced else 1), (rid, own, s.sink)
        finally:
            if not self.dp_closed:
                self.loop.run_until_complete(self.dp.close())
            self.loop.close()


SessionProtocol.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_session_protocol = SessionProtocol.TestCase


def test_an_answer_already_due_is_not_sent_for_a_request_cancelled_before_it_arrives() -> None:
    """The race the machine reaches only rarely: the computation finished (its answer is due on
    the loop) when the device's Cancel is read; the device must not get the answer."""
    machine = SessionProtocol()
    machine.new_request(which=0, total=16, inline=True)
    machine.loop_turns(1)  # the result is set; the callback that answers has not run
    machine.cancel(which=0, pick=0)
    machine.teardown()  # asserts: no answer for the cancelled request
