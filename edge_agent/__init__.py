"""Edge SDK and agent: head runtime, early exit, routing, session stream client, result cache,
encrypted replay queue, telemetry and the ``aiml021 edge`` CLI.

::

    async with EdgeAgent(EdgeSettings(bundle="models/fmnist_branchy", gateway="gw:8443",
                                      tls={"dir": "certs/device"})) as agent:
        result = await agent.infer(image_uint8)   # EdgeResult: top_class, route, timing...

See docs/edge_agent.md.
"""

from edge_agent._agent import AGENT_VERSION, EdgeAgent, channel_credentials
from edge_agent._cache import CachedAnswer, CacheMetrics, ResultCache, content_key
from edge_agent._policy_engine import PolicyEngineAdapter, bundle_profile, engine_heuristic
from edge_agent._replay import ReplayEntry, ReplayMetrics, ReplayQueue, load_key, parse_key
from edge_agent._routing import (
    Action,
    CutOption,
    RoutingContext,
    RoutingDecision,
    RoutingPolicy,
    ThresholdRouting,
)
from edge_agent._runtime import EdgeRuntime, HeadState, entropy
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient, StreamMetrics, backoff_delay
from edge_agent._sync import SyncEdgeAgent
from edge_agent._types import EdgeResult, ExitOutput, Reconciliation, Route, Timing

__all__ = [
    "AGENT_VERSION",
    "Action",
    "CacheMetrics",
    "CachedAnswer",
    "CutOption",
    "EdgeAgent",
    "EdgeResult",
    "EdgeRuntime",
    "EdgeSettings",
    "ExitOutput",
    "HeadState",
    "PolicyEngineAdapter",
    "Reconciliation",
    "ReplayEntry",
    "ReplayMetrics",
    "ReplayQueue",
    "ResultCache",
    "Route",
    "RoutingContext",
    "RoutingDecision",
    "RoutingPolicy",
    "SessionClient",
    "StreamMetrics",
    "SyncEdgeAgent",
    "ThresholdRouting",
    "Timing",
    "backoff_delay",
    "bundle_profile",
    "channel_credentials",
    "content_key",
    "engine_heuristic",
    "entropy",
    "load_key",
    "parse_key",
]
