"""Edge SDK and agent: head runtime, early exit, routing, session stream client, result cache,
encrypted replay queue, telemetry and the ``aiml021 edge`` CLI.

::

    async with EdgeAgent(EdgeSettings(bundle="models/fmnist_branchy", gateway="gw:8443",
                                      tls={"dir": "certs/device"})) as agent:
        result = await agent.infer(image_uint8)   # EdgeResult: top_class, route, timing...

See docs/edge_agent.md.
"""

from edge_agent._agent import AGENT_VERSION, EdgeAgent
from edge_agent._cache import CachedAnswer, CacheMetrics, ResultCache, content_key
from edge_agent._connection import StreamMetrics
from edge_agent._convert import CloudAnswer, OutboundRequest
from edge_agent._features import EncodedFeatures, combine_features, encode_cut, encode_features
from edge_agent._policy_engine import default_policy, device_profile, guarded_decide
from edge_agent._refine import Refiner, cascade_refiner, session_refiner
from edge_agent._replay import ReplayEntry, ReplayMetrics, ReplayQueue, load_key, parse_key
from edge_agent._runtime import EdgeRuntime, HeadState, entropy
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient, backoff_delay, channel_credentials
from edge_agent._sync import SyncEdgeAgent
from edge_agent._types import EdgeResult, ExitOutput, Reconciliation, Route, Timing

__all__ = [
    "AGENT_VERSION",
    "CacheMetrics",
    "CachedAnswer",
    "CloudAnswer",
    "EdgeAgent",
    "EdgeResult",
    "EdgeRuntime",
    "EdgeSettings",
    "EncodedFeatures",
    "ExitOutput",
    "HeadState",
    "OutboundRequest",
    "Reconciliation",
    "Refiner",
    "ReplayEntry",
    "ReplayMetrics",
    "ReplayQueue",
    "ResultCache",
    "Route",
    "SessionClient",
    "StreamMetrics",
    "SyncEdgeAgent",
    "Timing",
    "backoff_delay",
    "cascade_refiner",
    "channel_credentials",
    "combine_features",
    "content_key",
    "default_policy",
    "device_profile",
    "encode_cut",
    "encode_features",
    "entropy",
    "guarded_decide",
    "load_key",
    "parse_key",
    "session_refiner",
]
