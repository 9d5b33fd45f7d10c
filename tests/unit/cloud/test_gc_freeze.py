"""cloud._memory.freeze_start_up_objects: what start-up loaded leaves the collector's
generations, so a full collection under load walks only what came after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cloud._memory import freeze_start_up_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process keeps collecting everything, as before


def test_start_up_objects_leave_the_generations_and_later_ones_do_not(unfrozen: None) -> None:
    loaded = [[f"model {i}"] for i in range(1_000)]  # start-up state, alive for the process's life
    tracked_before = len(gc.get_objects())
    frozen = freeze_start_up_objects()
    assert frozen == gc.get_freeze_count() >= len(loaded)
    # The generations no longer hold them: what a full collection walks is what came after.
    assert len(gc.get_objects()) < tracked_before - len(loaded)
    later = [[f"request {i}"] for i in range(10)]
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in tracked for o in later) and not any(id(o) in tracked for o in loaded)
    # Cyclic garbage made after start-up is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
