"""A bundle swapped out keeps running the requests that started on it: its compute thread stops
only after the last of them, and its answers no longer go into the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from common.bundle import load_bundle
from edge_agent import EdgeAgent, EdgeSettings
from edge_agent._loaded import LoadedBundle, load
from tests.support.edge_bundle import images, make_bundle


def _loaded(bundle_dir: Path, agent: EdgeAgent) -> LoadedBundle:
    return load(load_bundle(bundle_dir), agent.settings, agent.cache, agent._cut_codec)


def _first_exit(loaded: LoadedBundle, image: np.ndarray) -> int:
    state = loaded.runtime.start(loaded.runtime.prepare(image))
    loaded.runtime.step(state)
    return state.exits[0].top_class


async def test_a_retired_bundle_finishes_its_requests_before_its_thread_stops(
    local_bundle_dir: Path,
) -> None:
    settings = EdgeSettings.model_validate({"bundle": local_bundle_dir})
    async with EdgeAgent(settings) as agent:
        old = _loaded(local_bundle_dir, agent)
        old.head.start()
        state = old.runtime.start(old.runtime.prepare(images(1)[0]))
        old.enter()
        old.retire()
        assert not old.answers.caching
        assert old.head._exec is not None  # a request is on it: its thread runs on
        assert await old.head.step(state)
        old.leave()
        assert old.head._exec is None  # stopped after the last one


async def test_swapping_in_a_bundle_sends_new_requests_to_it_and_clears_the_cache(
    local_bundle_dir: Path, tmp_path: Path
) -> None:
    other = make_bundle(tmp_path / "other", thresholds=(0.0, 0.0, 0.0), seed=5)
    settings = EdgeSettings.model_validate({"bundle": local_bundle_dir})
    async with EdgeAgent(settings) as agent:
        before = agent._model
        new = await asyncio.to_thread(_loaded, other, agent)
        # an image the two bundles answer differently
        image = next(im for im in images(64) if _first_exit(before, im) != _first_exit(new, im))
        first = await agent.infer(image)
        assert first.top_class == _first_exit(before, image) and len(agent.cache) == 1
        agent._swap(new)
        assert agent._model is new and before.retired and len(agent.cache) == 0
        second = await agent.infer(image)
        assert not second.cache_hit and second.top_class == _first_exit(new, image)
