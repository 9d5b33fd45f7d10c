"""Decisions: heuristic, LinUCB, Thompson sampling, DQN, cut-point selection, trace simulator and
off-policy evaluation, online learning from reported outcomes and the versioned policy devices
run. Never imports grpc: PolicyService and the PolicyUpdate converters live in ``cloud.grpc``.

One interface, :class:`Policy`: ``decide(DecisionContext) -> Decision``, ``update(Outcome)``,
``state_dict()`` / ``load_state()``. See docs/policy.md.
"""

from policy._admin import PolicyAdmin, PublishRate
from policy._bandits import LinUCBPolicy, ThompsonPolicy
from policy._base import ArmSpace, Featurizer, Policy, ThresholdPolicy
from policy._config import PolicyConfig, describe, kinds_schema, parse_config
from policy._cut import AdaptiveCutSelector, CutChoice
from policy._dqn import MLP, DQNPolicy
from policy._experiments import ArmMetrics, Experiment, Guardrail
from policy._fallback import FallbackPolicy
from policy._heuristic import (
    EpsilonGreedy,
    HeuristicPolicy,
    StaticThresholdPolicy,
    arm_probabilities,
)
from policy._learned import LearnedPolicy
from policy._learning import OnlineLearner, ReportedOutcome
from policy._manifest import DISABLED_EXIT_THRESHOLD, profile_from_manifest
from policy._network import SCENARIOS, NetworkSample, NetworkScenario
from policy._objective import ObjectiveWeights
from policy._ope import Estimate, RewardModel, off_policy_evaluate, on_policy_value
from policy._profile import (
    INPUT_CUT,
    BundleProfile,
    CodecCost,
    CutPointCost,
    ExitCost,
    LatencyModel,
    expected_latency_ms,
)
from policy._publish import DEFAULT_CLASS, PolicyPublisher, PolicySnapshot, snapshot
from policy._registry import KINDS, dumps_state, make_policy, policy_from_state
from policy._simulator import Environment, SimConfig, SimResult, Simulator, Step
from policy._static_eval import StaticConfig, evaluate_static, static_grid, tune_static
from policy._trace import Trace, entropy_from_confidence, synthetic_profile, synthetic_trace
from policy._types import Action, Arm, Decision, DecisionContext, Outcome

__all__ = [
    "DEFAULT_CLASS",
    "DISABLED_EXIT_THRESHOLD",
    "INPUT_CUT",
    "KINDS",
    "MLP",
    "SCENARIOS",
    "Action",
    "AdaptiveCutSelector",
    "Arm",
    "ArmMetrics",
    "ArmSpace",
    "BundleProfile",
    "CodecCost",
    "CutChoice",
    "CutPointCost",
    "DQNPolicy",
    "Decision",
    "DecisionContext",
    "Environment",
    "EpsilonGreedy",
    "Estimate",
    "ExitCost",
    "Experiment",
    "FallbackPolicy",
    "Featurizer",
    "Guardrail",
    "HeuristicPolicy",
    "LatencyModel",
    "LearnedPolicy",
    "LinUCBPolicy",
    "NetworkSample",
    "NetworkScenario",
    "ObjectiveWeights",
    "OnlineLearner",
    "Outcome",
    "Policy",
    "PolicyAdmin",
    "PolicyConfig",
    "PolicyPublisher",
    "PolicySnapshot",
    "PublishRate",
    "ReportedOutcome",
    "RewardModel",
    "SimConfig",
    "SimResult",
    "Simulator",
    "StaticConfig",
    "StaticThresholdPolicy",
    "Step",
    "ThompsonPolicy",
    "ThresholdPolicy",
    "Trace",
    "arm_probabilities",
    "describe",
    "dumps_state",
    "entropy_from_confidence",
    "evaluate_static",
    "expected_latency_ms",
    "kinds_schema",
    "make_policy",
    "off_policy_evaluate",
    "on_policy_value",
    "parse_config",
    "policy_from_state",
    "profile_from_manifest",
    "snapshot",
    "static_grid",
    "synthetic_profile",
    "synthetic_trace",
    "tune_static",
]
