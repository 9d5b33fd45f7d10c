"""One bundle as the agent runs it: its runtime, head, answers, privacy mechanisms, policy and
offloader, built together so that a new bundle can be swapped in while requests that started on
the previous one finish on it (each request holds the :class:`LoadedBundle` it started with)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from edge_agent._answer import Answers
from edge_agent._cache import ResultCache
from edge_agent._head import Head
from edge_agent._offload import Offloader
from edge_agent._policy_engine import default_policy, device_profile
from edge_agent._privacy import FeaturePrivacy
from edge_agent._runtime import EdgeRuntime, HeadState
from edge_agent._settings import EdgeSettings
from edge_agent._types import ExitOutput
from policy import FallbackPolicy, Policy

log = logging.getLogger(__name__)


class FiniteHead(Head):
    """The head of a bundle taken from an assignment: an exit with non-finite outputs is a
    failure in service (raised), so the bundle is rolled back. The probe on zero inputs cannot
    see a head that overflows or divides by zero only on real ones."""

    async def step(self, state: HeadState) -> list[ExitOutput]:
        exits = await super().step(state)
        for e in exits:
            if not np.all(np.isfinite(e.probabilities)):
                raise FloatingPointError(f"exit {e.name} gives non-finite outputs")
        return exits


CodecOf = Callable[[Bundle, str, str | None], str]
"""The codec spec for a cut point of a bundle (the override when given)."""


@dataclasses.dataclass(eq=False)
class LoadedBundle:
    """Everything of the agent that depends on its bundle. ``active`` counts the requests
    running on it; once :meth:`retire` was called the head's thread stops after the last."""

    bundle: Bundle
    runtime: EdgeRuntime
    head: Head
    answers: Answers
    privacy: FeaturePrivacy | None
    policy: Policy
    fallback: FallbackPolicy
    embedding_tensor: str | None
    model_name: str
    model_version: str
    """The version declared in Hello and sent with each request (the bundle's own when the
    agent follows an assignment; else the pinned ``model_version``, maybe empty)."""
    path: Path | None = None
    """The installed directory it came from (None: a bundle handed to the agent)."""
    offload: Offloader | None = None
    active: int = 0
    retired: bool = False

    @property
    def label(self) -> str:
        return f"{self.bundle.name} {self.bundle.manifest.version}"

    def enter(self) -> None:
        """A request starts on this bundle."""
        self.active += 1

    def leave(self) -> None:
        """A request that started on this bundle is answered (or failed)."""
        self.active -= 1
        if self.retired and self.active == 0:
            self.head.close()

    def retire(self) -> None:
        """Swapped out: no new request starts here, the cache no longer takes its answers, its
        compute thread stops once the requests still running on it are answered."""
        self.retired = True
        self.answers.caching = False
        if self.active == 0:
            self.head.close()


def load(
    bundle: Bundle,
    settings: EdgeSettings,
    cache: ResultCache,
    codec_of: CodecOf,
    *,
    policy: Policy | None = None,
    follows_assignment: bool = False,
    accountant_from: FeaturePrivacy | None = None,
    path: Path | None = None,
) -> LoadedBundle:
    """Build the runtime (onnxruntime sessions), head and policy of ``bundle``; blocking (it
    measures the device profile), so a running agent calls it in a thread. ``policy`` is the
    application's (kept across bundles); ``accountant_from``: the privacy budget the device has
    spent carries over to the new bundle instead of starting again."""
    st = settings
    runtime = EdgeRuntime(bundle, threads=st.runtime.intra_op_threads)
    model_name = st.model_name or bundle.name
    version = bundle.manifest.version if follows_assignment else st.model_version
    privacy = FeaturePrivacy.from_settings(
        st.privacy, model_name, [c.name for c in bundle.cut_points]
    )
    if privacy is not None and accountant_from is not None:
        privacy.accountant = accountant_from.accountant

    def codec(cut: str, override: str | None = None) -> str:
        return codec_of(bundle, cut, override)

    kind = FiniteHead if follows_assignment else Head
    head = kind(runtime, codec, in_thread=st.runtime.compute_in_thread, privacy=privacy)
    profile = device_profile(runtime, {c.name: codec(c.name) for c in bundle.cut_points})
    first_cut = bundle.cut_points[0].name if bundle.cut_points else None
    embedding = st.cache.embedding or first_cut
    return LoadedBundle(
        bundle=bundle,
        runtime=runtime,
        head=head,
        answers=Answers(runtime, cache, embedding),
        privacy=privacy,
        policy=policy or default_policy(profile),
        fallback=FallbackPolicy(profile),
        embedding_tensor=embedding,
        model_name=model_name,
        model_version=version,
        path=path,
    )


__all__ = ["CodecOf", "FiniteHead", "LoadedBundle", "load"]
