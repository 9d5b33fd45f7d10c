"""Per-device quotas: every session and every inference call of a device draw on one ledger;
limits on sessions, in-flight requests, buffered bytes and request rate, and a fair share of the
global budget; a call is left on every exit path and an idle ledger is dropped."""

from __future__ import annotations

import asyncio

import pytest

from cloud.core import ByteBudget, Chunk, DeviceQuota, DeviceQuotas, SessionCore, SessionLimits
from common.errors import ResourceExhausted
from tests.unit.cloud._session_plane import ROW, RecordingSink, header, session_plane

LIMITS = SessionLimits(
    max_request_bytes=1024,
    max_chunk_bytes=1024,
    max_inflight_requests=64,
    max_session_buffer_bytes=4096,
    reassembly_timeout_s=5.0,
    ping_interval_s=20.0,
)


def test_sessions_per_device_are_capped_and_counted_back() -> None:
    quotas = DeviceQuotas(DeviceQuota(max_sessions=2), ByteBudget(1000))
    a, b = quotas.open_session("cam"), quotas.open_session("cam")
    assert a is b and a.sessions == 2
    with pytest.raises(ResourceExhausted, match=r"limits.max_sessions_per_device = 2"):
        quotas.open_session("cam")
    quotas.open_session("other")  # another device is not affected
    a.close_session()
    quotas.open_session("cam")
    assert quotas.connected_devices == 2


def test_device_buffer_cap_and_fair_share_leave_room_for_others() -> None:
    budget = ByteBudget(1000)
    quotas = DeviceQuotas(DeviceQuota(max_buffered_bytes=600), budget)
    hog = quotas.open_session("hog")
    hog.open_request(500)
    with pytest.raises(ResourceExhausted, match="max_buffered_bytes_per_device"):
        hog.open_request(200)
    # A second device arrives: the fair share is 500 each; the hog keeps what it holds but
    # cannot grow, the newcomer gets its share.
    new = quotas.open_session("new")
    with pytest.raises(ResourceExhausted, match=r"fair share .*500 bytes with 2 devices"):
        hog.open_request(1)
    new.open_request(500)
    assert budget.used == 1000
    with pytest.raises(ResourceExhausted, match="fair share"):
        new.open_request(1)
    hog.release_bytes(500)
    hog.finish_request()
    assert budget.used == 500 and hog.buffered == 0


def test_inflight_per_device_and_global_budget() -> None:
    budget = ByteBudget(100)
    quotas = DeviceQuotas(DeviceQuota(max_inflight=2, fair_share=False), budget)
    d = quotas.open_session("d")
    d.open_request(10)
    d.open_request(10)
    with pytest.raises(ResourceExhausted, match=r"limits\.max_inflight_per_device = 2"):
        d.open_request(10)
    d.finish_request()
    with pytest.raises(ResourceExhausted, match="global_buffer_bytes"):
        d.open_request(81)
    assert (d.inflight, d.buffered, budget.used) == (1, 20, 20)  # a refusal takes nothing


def test_request_rate_is_a_token_bucket() -> None:
    now = [0.0]
    quotas = DeviceQuotas(
        DeviceQuota(requests_per_s=10, burst=3), ByteBudget(100), clock=lambda: now[0]
    )
    d = quotas.open_session("d")
    for _ in range(3):
        d.take_token()
    with pytest.raises(ResourceExhausted, match=r"request rate of 10/s \(limits.requests_per_s\)"):
        d.take_token()
    now[0] += 0.1  # one token back
    d.take_token()
    with pytest.raises(ResourceExhausted):
        d.take_token()


async def test_sessions_of_one_device_share_its_quota() -> None:
    dp, backend = await session_plane()
    backend.hold()
    quotas = DeviceQuotas(DeviceQuota(max_inflight=3, max_buffered_bytes=32), ByteBudget(4096))
    sinks = [RecordingSink(), RecordingSink()]
    cores = [
        SessionCore(dp, LIMITS, quotas.budget, sink, "cam", f"s{i}", quotas.open_session("cam"))
        for i, sink in enumerate(sinks)
    ]
    cores[0].on_header(header("a"))
    cores[1].on_header(header("b"))
    cores[1].on_header(header("c"))  # 48 bytes buffered over the device's two sessions > 32
    assert [r for r, _ in sinks[1].errors] == ["c"]
    assert "max_buffered_bytes_per_device" in sinks[1].errors[0][1].message
    cores[0].on_chunk(Chunk("a", 0, ROW, True))  # computing now: its bytes are free again
    cores[1].on_header(header("d"))
    cores[0].on_header(header("e"))  # a, b, d open: the 4th request of the device is refused
    assert "max_inflight_per_device = 3" in sinks[0].errors[-1][1].message
    ledger = quotas.ledger("cam")
    assert ledger is not None and (ledger.inflight, ledger.buffered) == (3, 32)
    backend.release()
    await asyncio.sleep(0.05)
    assert sinks[0].results == ["a"]
    for core in cores:
        core.close()
    assert (ledger.inflight, ledger.buffered, quotas.budget.used) == (0, 0, 0)
    await dp.close()


def test_calls_and_sessions_of_a_device_share_its_tokens_and_in_flight() -> None:
    now = [0.0]
    quotas = DeviceQuotas(
        DeviceQuota(requests_per_s=10, burst=3, max_inflight=2),
        ByteBudget(100),
        clock=lambda: now[0],
    )
    session = quotas.open_session("cam")
    session.take_token()  # an InferHeader
    session.open_request(10)
    first = quotas.call("cam", 5)  # a ModelInfer of the same device: the same ledger
    assert quotas.ledger("cam") is session and (session.inflight, session.buffered) == (2, 15)
    with pytest.raises(
        ResourceExhausted, match=r"2 requests in flight over its sessions and calls .*= 2\)"
    ):
        quotas.call("cam")  # takes the last token, refused for the in-flight cap
    first.leave()
    with pytest.raises(ResourceExhausted, match=r"request rate of 10/s \(limits.requests_per_s\)"):
        quotas.call("cam")
    with pytest.raises(ResourceExhausted, match=r"limits\.requests_per_s"):
        session.take_token()  # the session is out of tokens too
    quotas.call("other").leave()  # another device has its own bucket
    now[0] += 0.1  # one token back
    with quotas.call("cam", 7):
        assert (session.inflight, session.buffered, quotas.budget.used) == (2, 17, 17)
    assert (session.inflight, session.buffered, quotas.budget.used) == (1, 10, 10)


def test_a_refused_call_takes_its_token_but_holds_nothing() -> None:
    budget = ByteBudget(1000)
    quotas = DeviceQuotas(DeviceQuota(max_buffered_bytes=100, burst=2), budget)
    with pytest.raises(ResourceExhausted, match=r"limits.max_buffered_bytes_per_device = 100"):
        quotas.call("cam", 101)
    assert quotas.ledger("cam") is None and budget.used == 0
    quotas.call("cam").leave()
    with pytest.raises(ResourceExhausted, match=r"limits\.requests_per_s"):
        quotas.call("cam")  # the refused call's token was spent


def test_a_call_holding_its_body_is_refused_past_the_buffer_quota_and_returns_all() -> None:
    budget = ByteBudget(1000)
    quotas = DeviceQuotas(DeviceQuota(max_buffered_bytes=100), budget)
    with quotas.call("cam") as call:  # REST: counted before the body is read
        call.hold(60)
        with pytest.raises(ResourceExhausted, match="max_buffered_bytes_per_device"):
            call.hold(41)
        assert (call.nbytes, budget.used) == (60, 60)
    assert budget.used == 0 and quotas.ledger("cam") is None


def test_calls_are_left_on_error_and_the_idle_ledger_is_dropped() -> None:
    budget = ByteBudget(1000)
    quotas = DeviceQuotas(DeviceQuota(), budget)
    with pytest.raises(ValueError), quotas.call("cam", 50):
        assert quotas.connected_devices == 1 and budget.used == 50
        raise ValueError("the model failed")
    assert quotas.ledger("cam") is None and budget.used == 0 and quotas.connected_devices == 0
    call = quotas.call("cam", 50)
    call.leave()
    call.leave()  # a second leave (a done callback after a finally) returns nothing twice
    assert budget.used == 0 and quotas.ledger("cam") is None


async def test_a_cancelled_call_is_left() -> None:
    budget = ByteBudget(1000)
    quotas = DeviceQuotas(DeviceQuota(), budget)
    started = asyncio.Event()

    async def infer() -> None:
        with quotas.call("cam", 200):
            started.set()
            await asyncio.sleep(60)  # the client goes away meanwhile

    task = asyncio.create_task(infer())
    await started.wait()
    assert budget.used == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.used == 0 and quotas.ledger("cam") is None


def test_a_call_that_ends_leaves_a_session_ledger_in_place() -> None:
    quotas = DeviceQuotas(DeviceQuota(), ByteBudget(1000))
    session = quotas.open_session("cam")
    quotas.call("cam", 10).leave()
    assert quotas.ledger("cam") is session
    session.close_session()
    assert quotas.ledger("cam") is None


def test_pausing_between_calls_does_not_refill_the_bucket() -> None:
    now = [0.0]
    quotas = DeviceQuotas(
        DeviceQuota(requests_per_s=10, burst=3), ByteBudget(100), clock=lambda: now[0]
    )
    for _ in range(3):  # one at a time: the ledger is dropped after each call
        quotas.call("cam").leave()
        assert quotas.ledger("cam") is None
    with pytest.raises(ResourceExhausted, match=r"limits\.requests_per_s"):
        quotas.call("cam")
    assert quotas.resting_buckets == 1  # two floats kept while the bucket refills
    now[0] += 0.3  # full again: forgotten at the next drop
    quotas.call("other").leave()
    quotas.call("other").leave()
    assert quotas.resting_buckets == 1  # only "other", still refilling
    for _ in range(3):
        quotas.call("cam").leave()


def test_a_caller_that_is_no_device_is_not_counted() -> None:
    budget = ByteBudget(10)
    quotas = DeviceQuotas(DeviceQuota(requests_per_s=1, burst=1), budget)
    for _ in range(3):
        with quotas.call("", 100) as call:
            call.hold(100)
            assert quotas.connected_devices == 0 and budget.used == 0
