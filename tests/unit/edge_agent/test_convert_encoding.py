"""The edge describes a payload once: a codec frame carries its own codec, the header only the
dtype and shape the gateway checks before buffering (and RAW for bare elements)."""

from __future__ import annotations

import numpy as np
from aiml021.common.v1 import tensor_pb2

from common import codecs
from edge_agent._convert import OutboundRequest, infer_frames
from edge_agent._features import EncodedFeatures, crc32c, encode_features


def _header(features: EncodedFeatures) -> tensor_pb2.EncodedTensorHeader:
    req = OutboundRequest(
        request_id="r", idempotency_key="k", model_name="m", model_version="", cut_point="cut1",
        features=features, deadline=2e9, digest=b"d",
    )  # fmt: skip
    return infer_frames(req, 1 << 20, inline=True)[0].infer_header.encoding


def test_a_frame_is_described_by_itself_not_by_the_header() -> None:
    x = np.random.default_rng(0).random((1, 4, 3, 3), dtype=np.float32)
    f = encode_features(x, "q4|zstd")
    enc = _header(f)
    assert not enc.HasField("codec")  # the frame's own header names the pipeline
    assert enc.dtype == tensor_pb2.DATA_TYPE_FLOAT32 and list(enc.shape) == [1, 4, 3, 3]
    assert str(codecs.peek_header(f.payload).spec) == f.codec


def test_bare_elements_are_declared_raw() -> None:
    x = np.ones((2, 3), np.float32)
    payload = x.tobytes()
    bare = EncodedFeatures(payload, "raw", "float32", (2, 3), len(payload), crc32c(payload), False)
    enc = _header(bare)
    assert [s.kind for s in enc.codec.stages] == [tensor_pb2.CODEC_KIND_RAW]
    assert enc.codec.text == "raw"
