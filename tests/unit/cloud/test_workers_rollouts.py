"""Rollouts shared between gateway processes: the JSON a rollout travels as, and what a process
adopts from another (as is, but never a version it does not serve)."""

from __future__ import annotations

from cloud._workers_rollouts import rollout_from_json, rollout_to_json
from cloud.core import RollbackPolicy, Rollout, RolloutManager, RolloutMode, RolloutState


def _manager() -> RolloutManager:
    return RolloutManager(lambda name, version: name == "m" and version in {"1", "2"})


def test_a_rollout_survives_its_json_unchanged() -> None:
    r = Rollout("m", "1", "2", RolloutMode.SHADOW, 0.25, RollbackPolicy(0.1, 7),
                RolloutState.ROLLED_BACK, 123.5)  # fmt: skip
    assert rollout_from_json(rollout_to_json(r)) == r


def test_adopt_keeps_state_and_time_that_set_would_refuse_or_restamp() -> None:
    m = _manager()
    theirs = Rollout("m", "1", "2", RolloutMode.CANARY, 1.0, state=RolloutState.ROLLED_BACK,
                     updated_at=5.0)  # fmt: skip
    assert m.adopt(theirs)
    assert m.get("m")[0] == theirs
    choice = m.choose("m", "any")
    assert choice is not None and choice.version == "1"  # rolled back: the stable one answers


def test_adopt_refuses_a_version_this_process_does_not_serve() -> None:
    m = _manager()
    assert not m.adopt(Rollout("m", "1", "9", RolloutMode.CANARY, 1.0))
    assert m.rollouts() == []
