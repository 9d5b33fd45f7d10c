"""common.prototime: Duration/Timestamp <-> seconds and milliseconds."""

from __future__ import annotations

import time

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from common import prototime as pt


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 0.25, 1.5, 3600.000001, -0.75])
def test_durations_round_trip_in_seconds_and_milliseconds(seconds: float) -> None:
    d = pt.duration_from_s(seconds)
    assert pt.duration_to_s(d) == pytest.approx(seconds, abs=1e-9)
    assert pt.duration_to_ms(pt.duration_from_ms(seconds * 1e3)) == pytest.approx(
        seconds * 1e3, abs=1e-6
    )
    assert pt.duration_from_ms(seconds * 1e3) == d


def test_durations_are_the_well_known_type_fields() -> None:
    d = pt.duration_from_ms(1500.25)
    assert (d.seconds, d.nanos) == (1, 500_250_000)
    assert pt.duration_to_ms(duration_pb2.Duration(seconds=2, nanos=5_000_000)) == 2005.0


def test_conversions_round_to_the_nearest_nanosecond() -> None:
    assert pt.duration_from_s(0.1).nanos == 100_000_000
    assert pt.duration_from_s(2.9999999996).ToNanoseconds() == 3_000_000_000


def test_timestamps_round_trip() -> None:
    t = pt.timestamp_from_s(1_700_000_000.123456)
    assert isinstance(t, timestamp_pb2.Timestamp)
    assert pt.timestamp_to_s(t) == pytest.approx(1_700_000_000.123456, abs=1e-6)


def test_now_and_a_peer_deadline_on_the_monotonic_clock() -> None:
    before = time.time()
    assert before - 1 <= pt.timestamp_to_s(pt.now_timestamp()) <= time.time() + 1
    deadline = pt.monotonic_from_timestamp(pt.timestamp_from_s(time.time() + 2.0))
    assert deadline - time.monotonic() == pytest.approx(2.0, abs=0.1)
