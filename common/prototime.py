"""``google.protobuf`` Duration and Timestamp <-> plain numbers: the one place they convert.

Inside the product a duration is a float of seconds (``*_s``) or milliseconds (``*_ms``) and an
instant is float seconds since the Unix epoch; on the wire they are ``Duration`` and
``Timestamp`` (AIP-142). Converters call these functions and nothing else touches
``seconds``/``nanos``. Conversions round to the nearest nanosecond.
"""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2


def duration_from_s(seconds: float) -> duration_pb2.Duration:
    """A Duration of ``seconds``."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def duration_to_s(d: duration_pb2.Duration) -> float:
    """Seconds of a Duration."""
    return d.ToNanoseconds() / 1e9


def duration_from_ms(ms: float) -> duration_pb2.Duration:
    """A Duration of ``ms`` milliseconds."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(ms * 1e6))
    return d


def duration_to_ms(d: duration_pb2.Duration) -> float:
    """Milliseconds of a Duration."""
    return d.seconds * 1e3 + d.nanos / 1e6


def timestamp_from_s(epoch_s: float) -> timestamp_pb2.Timestamp:
    """A Timestamp of ``epoch_s`` seconds since the Unix epoch."""
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(round(epoch_s * 1e9))
    return t


def timestamp_to_s(t: timestamp_pb2.Timestamp) -> float:
    """Seconds since the Unix epoch of a Timestamp."""
    return t.ToNanoseconds() / 1e9


def now_timestamp() -> timestamp_pb2.Timestamp:
    """The current wall-clock time as a Timestamp."""
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(time.time_ns())
    return t


def monotonic_from_timestamp(t: timestamp_pb2.Timestamp) -> float:
    """The ``time.monotonic()`` instant of a wall-clock Timestamp (a peer's deadline)."""
    return time.monotonic() + (timestamp_to_s(t) - time.time())


__all__ = [
    "duration_from_ms",
    "duration_from_s",
    "duration_to_ms",
    "duration_to_s",
    "monotonic_from_timestamp",
    "now_timestamp",
    "timestamp_from_s",
    "timestamp_to_s",
]
