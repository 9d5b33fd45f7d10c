"""Network estimates from the session's own traffic: RTT from Ping/Pong, uplink bandwidth from
completed offloads (payload bits over the time not explained by RTT and gateway work)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class NetStats:
    """Exponentially weighted RTT and bandwidth estimates."""

    rtt_s: float
    bandwidth_bps: float
    alpha: float = 0.2
    """Weight of a new sample."""
    min_bandwidth_bytes: int = 2048
    """Offloads smaller than this say little about bandwidth and are not sampled."""
    rtt_samples: int = 0
    bandwidth_samples: int = 0

    def observe_rtt(self, seconds: float) -> None:
        """Fold one Ping/Pong round trip into the estimate."""
        if seconds < 0:
            return
        self.rtt_s = seconds if self.rtt_samples == 0 else self._ewma(self.rtt_s, seconds)
        self.rtt_samples += 1

    def observe_transfer(self, payload_bytes: int, elapsed_s: float, server_s: float) -> None:
        """Fold one offload in: ``elapsed_s`` from first byte sent to answer, ``server_s`` the
        gateway's reported queue + compute time."""
        if payload_bytes < self.min_bandwidth_bytes:
            return
        wire = elapsed_s - server_s - self.rtt_s
        # Faster than the estimate could resolve: treat as at least 8x the payload per RTT/8.
        wire = max(wire, max(self.rtt_s, 1e-4) / 8.0)
        sample = payload_bytes * 8.0 / wire
        self.bandwidth_bps = (
            sample if self.bandwidth_samples == 0 else self._ewma(self.bandwidth_bps, sample)
        )
        self.bandwidth_samples += 1

    def _ewma(self, old: float, new: float) -> float:
        return (1.0 - self.alpha) * old + self.alpha * new


__all__ = ["NetStats"]
