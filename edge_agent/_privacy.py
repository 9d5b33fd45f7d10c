"""Differential privacy on this device's offloaded features: each cut point's Gaussian mechanism
(from the ``privacy`` settings for this model and org) and the device's privacy accountant."""

from __future__ import annotations

import logging

import numpy as np

from common.errors import InvalidArgument
from common.privacy import FeaturePrivacySettings, GaussianMechanism, PrivacyAccountant

log = logging.getLogger(__name__)


class FeaturePrivacy:
    """Privatises the tensor at a cut point before it is coded, charging the accountant first
    (ResourceExhausted, and nothing released, once the device's budget is spent)."""

    def __init__(
        self, mechanisms: dict[str, GaussianMechanism], accountant: PrivacyAccountant
    ) -> None:
        self.mechanisms = mechanisms
        self.accountant = accountant

    @classmethod
    def from_settings(
        cls, settings: FeaturePrivacySettings, model: str, cuts: list[str]
    ) -> FeaturePrivacy | None:
        """The model's privacy on this device; None when DP is off for it."""
        try:
            mechanisms = settings.mechanisms(model, cuts)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if not mechanisms:
            return None
        accountant = PrivacyAccountant(
            settings.delta, settings.budget_epsilon, settings.accountant_path
        )
        for cut, m in mechanisms.items():
            log.info(
                "differential privacy on cut %s: ε=%g δ=%g clip=%g σ=%.4g",
                cut, m.epsilon, m.delta, m.clip_norm, m.sigma,
            )  # fmt: skip
        return cls(mechanisms, accountant)

    def privatise(self, cut: str, features: np.ndarray) -> np.ndarray:
        """The features to release at ``cut`` (unchanged for a cut without a mechanism)."""
        mechanism = self.mechanisms.get(cut)
        if mechanism is None:
            return features
        self.accountant.charge(mechanism)
        return mechanism.apply(features)

    def spent(self) -> float:
        """ε this device has spent (at the configured δ)."""
        return self.accountant.spent()


__all__ = ["FeaturePrivacy"]
