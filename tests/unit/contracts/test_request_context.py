"""InferHeader.context end to end: what the edge writes is what the gateway reads, in the one
decision vocabulary (policy.DecisionContext: milliseconds, Mbit/s)."""

from __future__ import annotations

import numpy as np

from cloud.grpc._converters import header_from_pb
from edge_agent._convert import OutboundRequest, infer_frames
from edge_agent._features import encode_features


def test_the_gateway_reads_the_context_the_edge_sends() -> None:
    feats = encode_features(np.ones((1, 4), np.float32), "raw")
    req = OutboundRequest(
        request_id="r1",
        idempotency_key="k1",
        model_name="m",
        model_version="",
        cut_point="cut1",
        features=feats,
        deadline=4e9,
        digest=b"",
        rtt_s=0.04,
        bandwidth_bps=8e6,
        exit_confidences=(0.5, 0.75),
        entropy=0.5,
        device_class="phone",
        edge_load=0.25,
    )
    (frame,) = infer_frames(req, 1 << 20, inline=True)
    ctx = header_from_pb(frame.infer_header).context
    assert ctx is not None
    assert ctx.confidences == (0.5, 0.75) and ctx.exit_index == 1 and ctx.confidence == 0.75
    assert ctx.rtt_ms == 40.0 and ctx.bandwidth_mbps == 8.0 and ctx.edge_load == 0.25
    assert ctx.entropy == 0.5 and ctx.device_class == "phone" and ctx.modality == "image"
