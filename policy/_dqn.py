"""DQN for the sequential exit/continue/offload decision, in numpy: a small MLP trained with a
Huber loss and Adam from an experience-replay buffer, with a periodically synced target network
(Mnih et al. 2015). Steps of one request form an episode; CONTINUE_LOCAL pays the extra local
compute and bootstraps from the best valid arm at the next exit."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from policy._base import FloatArray
from policy._learned import LearnedPolicy
from policy._profile import BundleProfile
from policy._types import DecisionContext, Outcome


class MLP:
    """Fully connected ReLU network with manual backprop and Adam."""

    def __init__(self, sizes: list[int], rng: np.random.Generator, lr: float = 1e-3) -> None:
        self.params: list[FloatArray] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            self.params.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)))
            self.params.append(np.zeros(fan_out))
        self.lr = lr
        self._m = [np.zeros_like(p) for p in self.params]
        self._v = [np.zeros_like(p) for p in self.params]
        self._t = 0

    def forward(self, x: FloatArray) -> FloatArray:
        h = x
        n = len(self.params) // 2
        for i in range(n):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < n - 1:
                h = np.maximum(h, 0.0)
        return h

    def train_step(self, x: FloatArray, grad_out_fn: Any) -> float:
        """Forward, ``grad_out_fn(out) -> (loss, dL/dout)``, backward, one Adam step."""
        n = len(self.params) // 2
        acts = [x]
        h = x
        for i in range(n):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < n - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        loss, g = grad_out_fn(h)
        grads: list[FloatArray] = [np.empty(0)] * len(self.params)
        for i in reversed(range(n)):
            grads[2 * i] = acts[i].T @ g
            grads[2 * i + 1] = g.sum(axis=0)
            if i > 0:
                g = (g @ self.params[2 * i].T) * (acts[i] > 0.0)
        self._t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for p, gr, m, v in zip(self.params, grads, self._m, self._v, strict=True):
            m *= b1
            m += (1 - b1) * gr
            v *= b2
            v += (1 - b2) * gr * gr
            mhat = m / (1 - b1**self._t)
            vhat = v / (1 - b2**self._t)
            p -= self.lr * mhat / (np.sqrt(vhat) + eps)
        return float(loss)

    def copy_from(self, other: MLP) -> None:
        self.params = [p.copy() for p in other.params]


class DQNPolicy(LearnedPolicy):
    """Deep Q-network over the arm catalogue with action masking."""

    kind = "dqn"

    def __init__(
        self,
        profile: BundleProfile,
        *,
        hidden: int = 64,
        lr: float = 1e-3,
        gamma: float = 1.0,
        buffer_size: int = 20_000,
        batch_size: int = 64,
        train_every: int = 2,
        target_sync: int = 250,
        warmup: int = 500,
        epsilon: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(profile, epsilon=epsilon, **kwargs)
        d, n = self.input_dim, self.n_arms
        self.hidden = hidden
        self.net = MLP([d, hidden, hidden, n], self.rng, lr)
        self.target = MLP([d, hidden, hidden, n], self.rng, lr)
        self.target.copy_from(self.net)
        self.gamma = gamma
        self.batch_size = batch_size
        self.train_every = train_every
        self.target_sync = target_sync
        self.warmup = warmup
        self._cap = buffer_size
        self._x = np.zeros((buffer_size, d))
        self._x2 = np.zeros((buffer_size, d))
        self._a = np.zeros(buffer_size, dtype=np.int64)
        self._r = np.zeros(buffer_size)
        self._done = np.zeros(buffer_size, dtype=bool)
        self._mask2 = np.zeros((buffer_size, n), dtype=bool)
        self._size = 0
        self._pos = 0
        self._steps = 0
        self._updates = 0
        self.last_loss = float("nan")

    @property
    def input_dim(self) -> int:
        return self.featurize.dim + (self.feature_dim - self.featurize.dim) * len(self.arm_space)

    def features(self, ctx: DecisionContext) -> FloatArray:
        """Shared features, then every arm's own columns (predicted latency, breach flag, hint)."""
        rows = super().features(ctx)
        d = self.featurize.dim
        return np.concatenate([rows[0, :d], rows[:, d:].T.reshape(-1)])

    def scores(self, x: FloatArray, *, explore: bool) -> FloatArray:
        return self.net.forward(x[None])[0]

    def learn(self, x: FloatArray, arm: int, outcome: Outcome) -> None:
        i = self._pos
        self._x[i] = x
        self._a[i] = arm
        self._r[i] = outcome.reward
        nxt = outcome.next_context
        self._done[i] = outcome.terminal or nxt is None
        if nxt is not None and not self._done[i]:
            self._x2[i] = self.features(nxt)
            self._mask2[i] = self.arm_space.mask(nxt.exit_index, nxt.link_up)
        self._pos = (i + 1) % self._cap
        self._size = min(self._size + 1, self._cap)
        self._steps += 1
        if self._size >= self.warmup and self._steps % self.train_every == 0:
            self._train()

    def _train(self) -> None:
        idx = self.rng.integers(0, self._size, self.batch_size)
        x, a, r, done = self._x[idx], self._a[idx], self._r[idx], self._done[idx]
        q_next = np.where(self._mask2[idx], self.target.forward(self._x2[idx]), -np.inf)
        best_next = np.where(done, 0.0, np.max(q_next, axis=1, initial=-1e9))
        target = r + self.gamma * np.where(done, 0.0, best_next)
        rows = np.arange(len(idx))

        def grad(out: FloatArray) -> tuple[float, FloatArray]:
            err = out[rows, a] - target
            huber = np.where(np.abs(err) <= 1.0, 0.5 * err * err, np.abs(err) - 0.5)
            g = np.zeros_like(out)
            g[rows, a] = np.clip(err, -1.0, 1.0) / len(idx)
            return float(huber.mean()), g

        self.last_loss = self.net.train_step(x, grad)
        self._updates += 1
        if self._updates % self.target_sync == 0:
            self.target.copy_from(self.net)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(hidden=self.hidden, weights=[p.tolist() for p in self.net.params])
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "weights" in state:
            self.net.params = [np.asarray(p, dtype=np.float64) for p in state["weights"]]
            self.target.copy_from(self.net)


__all__ = ["MLP", "DQNPolicy"]
