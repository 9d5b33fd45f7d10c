"""The head of the model on this device: steps its segments (on one worker thread when
``runtime.compute_in_thread`` is set, so the event loop stays free for the stream) and codes the
features at a cut point."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

from common.errors import InvalidArgument
from edge_agent._features import EncodedFeatures, encode_features, entropy_models, model_for
from edge_agent._privacy import FeaturePrivacy
from edge_agent._runtime import EdgeRuntime, HeadState
from edge_agent._types import ExitOutput


class Head:
    """Runs ``runtime`` one step at a time. ``codec_of(cut, override)`` names the codec spec
    for a cut point (the override when given); ``privacy`` (when DP is on) clips and noises the
    tensor before it is coded. :meth:`start` / :meth:`close` own the thread."""

    def __init__(
        self,
        runtime: EdgeRuntime,
        codec_of: Callable[[str, str | None], str],
        *,
        in_thread: bool = False,
        privacy: FeaturePrivacy | None = None,
    ) -> None:
        self.runtime = runtime
        self.privacy = privacy
        self._codec_of = codec_of
        self._in_thread = in_thread
        self._entropy_models = entropy_models(runtime.bundle)
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the compute thread when one was asked for."""
        if self._in_thread and self._exec is None:
            self._exec = concurrent.futures.ThreadPoolExecutor(1, "aiml021-head")

    def close(self) -> None:
        """Stop the compute thread (after the step in progress)."""
        if self._exec is not None:
            self._exec.shutdown(wait=True)
            self._exec = None

    async def step(self, state: HeadState) -> list[ExitOutput]:
        """Run the next segment; the exits it reached."""
        if self._exec is None:
            return self.runtime.step(state)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, self.runtime.step, state)

    async def run_to_end(self, state: HeadState) -> None:
        """Run the remaining segments (the local answer is then ``state.best_exit()``)."""
        while not self.runtime.done(state):
            await self.step(state)

    async def features(
        self, state: HeadState, cut: str | None, codec: str | None
    ) -> tuple[str, EncodedFeatures, float]:
        """Run to cut point ``cut`` (default: the latest one available now) and code its tensor
        with ``codec`` (default: ``codec_of``); the cut's name, the features and milliseconds
        spent coding. With DP on, raises ResourceExhausted once the device's budget is spent."""
        bundle = self.runtime.bundle
        names = [c.name for c in bundle.cut_points]
        name = cut or (self.runtime.available_cuts(state) or bundle.cut_points)[-1].name
        if name not in names:
            raise InvalidArgument(f"policy chose unknown cut point {name!r} (known: {names})")
        while name not in state.tensors and not self.runtime.done(state):
            await self.step(state)
        t = time.perf_counter()
        spec = self._codec_of(name, codec)
        tensor = state.tensors[name]
        if self.privacy is not None:
            tensor = self.privacy.privatise(name, tensor)
        feats = encode_features(tensor, spec, model_for(self._entropy_models, name, spec))
        return name, feats, (time.perf_counter() - t) * 1e3


__all__ = ["Head"]
