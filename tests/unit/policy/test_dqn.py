"""The numpy DQN: backprop is right, and it learns a sequential exit/continue problem."""

from __future__ import annotations

import numpy as np

from policy import (
    MLP,
    Action,
    BundleProfile,
    DecisionContext,
    DQNPolicy,
    Outcome,
    dumps_state,
    policy_from_state,
)


def test_mlp_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    net = MLP([4, 5, 3], rng, lr=0.0)  # lr 0: train_step leaves weights alone
    x = rng.standard_normal((6, 4))
    target = rng.standard_normal((6, 3))

    def loss_of(out: np.ndarray) -> float:
        return float(0.5 * ((out - target) ** 2).sum())

    grads: list[np.ndarray] = []
    orig_step = net.train_step

    def capture(out: np.ndarray) -> tuple[float, np.ndarray]:
        return loss_of(out), out - target

    # Recompute analytic gradients by running backprop with a spy on Adam's inputs.
    net._m = [np.zeros_like(p) for p in net.params]
    orig_step(x, capture)
    grads = [m / (1 - 0.9) for m in net._m]  # first Adam moment after one step = 0.1 * grad
    eps = 1e-6
    for p, g in zip(net.params, grads, strict=True):
        flat = p.reshape(-1)
        for i in range(min(flat.size, 5)):
            old = flat[i]
            flat[i] = old + eps
            up = loss_of(net.forward(x))
            flat[i] = old - eps
            down = loss_of(net.forward(x))
            flat[i] = old
            assert abs((up - down) / (2 * eps) - g.reshape(-1)[i]) < 1e-4


def test_dqn_learns_to_continue_when_the_next_exit_pays(profile: BundleProfile) -> None:
    """Exit 0 answers right with probability conf; continuing costs 0.05 and exit 1 is always
    right. Optimal: exit when conf > 0.95, else continue (offloads are made worse than both)."""
    rng = np.random.default_rng(0)
    pol = DQNPolicy(profile, seed=0, epsilon=0.2, warmup=200, target_sync=100, lr=3e-3)
    for _ in range(4000):
        conf = float(rng.random())
        c0 = DecisionContext(exit_index=0, confidences=(conf,), bandwidth_mbps=0.0)
        d0 = pol.decide(c0)
        if d0.action is Action.CONTINUE_LOCAL:
            c1 = DecisionContext(exit_index=1, confidences=(conf, 0.99), bandwidth_mbps=0.0)
            d1 = pol.decide(c1)
            r1 = 0.0 if d1.action is Action.EXIT_LOCAL else -0.3
            pol.update(Outcome(c0, d0, reward=-0.05, terminal=False, next_context=c1))
            pol.update(Outcome(c1, d1, reward=r1))
        else:
            r0 = (0.0 if rng.random() < conf else -1.0) - (
                0.3 if d0.action is Action.DEFER else 0.0
            )
            pol.update(Outcome(c0, d0, reward=r0))
    pol.epsilon = 0.0
    low = pol.decide(DecisionContext(exit_index=0, confidences=(0.3,), bandwidth_mbps=0.0))
    high = pol.decide(DecisionContext(exit_index=0, confidences=(0.999,), bandwidth_mbps=0.0))
    assert low.action is Action.CONTINUE_LOCAL
    assert high.action is Action.EXIT_LOCAL
    clone = policy_from_state(dumps_state(pol))
    assert (
        clone.decide(DecisionContext(exit_index=0, confidences=(0.3,), bandwidth_mbps=0.0)).action
        is Action.CONTINUE_LOCAL
    )
