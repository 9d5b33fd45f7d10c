"""A multi-tensor cut on the wire: the PP-OCRv4 detector split at the four backbone outputs that
feed its FPN (C2..C5), the head run on a real rendered frame, the four tensors coded each with its
own codec and sent by the edge's stream client as one request (``InferHeader.parts``); the gateway
decodes every part and feeds the tail, served from a Triton-layout directory. The probability map
that comes back equals the whole detector's."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.bundle._shapes import ImagePreprocessing, load_feeds
from common.bundle._split import load_model, split_model
from common.errors import InvalidArgument
from common.frames import render_frame
from common.settings import nest
from edge_agent._convert import OutboundRequest
from edge_agent._features import combine_features, encode_cut, encode_features
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient

V4_BACKBONE = ("p2o.Add.43", "p2o.Add.71", "p2o.Add.147", "p2o.Add.215")
TAIL = "ppocr_v4_det_fpn"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Head outputs and the whole detector's map on a 320x180 rendering of a test frame, and a
    models directory serving the tail in Triton's layout (no config.pbtxt: auto-completed)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None and spec.origin is not None, "rapidocr_onnxruntime: run make setup"
    model_path = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    model = load_model(model_path)
    tmp = tmp_path_factory.mktemp("fpn")
    frame = render_frame(0, "easy", "test", 0)
    Image.fromarray(frame.image).resize((320, 180), Image.Resampling.BILINEAR).save(tmp / "f.png")
    feeds = load_feeds(model, tmp / "f.png", ImagePreprocessing(short_side=32))
    result = split_model(model, list(V4_BACKBONE), feeds)
    (tmp / "models" / TAIL / "1").mkdir(parents=True)
    onnx.save(result.tail, str(tmp / "models" / TAIL / "1" / "model.onnx"))
    head = ort.InferenceSession(result.head.SerializeToString())
    cut = dict(zip(V4_BACKBONE, head.run(list(V4_BACKBONE), feeds), strict=True))
    full = ort.InferenceSession(str(model_path)).run(None, feeds)[0]
    return {"models": tmp / "models", "cut": cut, "full": full}


def _outbound(rid: str, features: object) -> OutboundRequest:
    payload = features.payload  # type: ignore[attr-defined]
    return OutboundRequest(
        request_id=rid,
        idempotency_key=rid,
        model_name=TAIL,
        model_version="1",
        cut_point="",
        features=features,  # type: ignore[arg-type]
        deadline=time.time() + 60,
        digest=hashlib.sha256(payload).digest(),
    )


async def test_edge_sends_a_multi_tensor_cut_and_the_gateway_feeds_the_tail(split: dict) -> None:
    settings = GatewaySettings(
        **nest(
            {
                "models_dir": split["models"],
                "server.port": 0,
                "metrics.port": None,
                "tls.insecure": True,
            }
        )
    )
    # each tensor its own codec: the two finest levels (most bytes) quantised and entropy coded,
    # C4 as half floats, the smallest (C5) raw
    codecs = dict(zip(V4_BACKBONE, ("int8|zstd", "int8|zstd", "f16", "raw"), strict=True))
    async with Gateway(settings) as gw:
        target = f"127.0.0.1:{gw.port}"
        edge = EdgeSettings(**nest({"gateway": target, "tls.insecure": True}))
        async with SessionClient(target, edge) as client:
            assert await client.wait_connected(10)
            exact = await client.submit(_outbound("raw", encode_cut(split["cut"], "raw")))
            coded = encode_cut(split["cut"], codecs)
            mixed = await client.submit(_outbound("mixed", coded))
            # a part whose frame holds another tensor than its header declares fails only its
            # own request, before the tail sees it; the stream goes on
            parts = dict(coded.parts)
            c3 = parts[V4_BACKBONE[1]]
            other = encode_features(np.zeros((1, 3, 2, 2), np.float32), "int8|zstd")
            parts[V4_BACKBONE[1]] = dataclasses.replace(c3, payload=other.payload)
            with pytest.raises(InvalidArgument, match=r"frame holds float32\[1, 3, 2, 2\]"):
                await client.submit(_outbound("lying", combine_features(parts)))
            again = await client.submit(_outbound("again", coded))
        received = {
            sample.labels["codec"]: sample.value
            for family in gw.metrics.bytes_received.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }
    prob = "sigmoid_0.tmp_0"
    full = split["full"]
    assert exact.outputs[prob].shape == full.shape == (1, 1, 192, 320)
    assert float(np.abs(exact.outputs[prob] - full).max()) <= 1e-4
    assert [name for name, _ in coded.parts] == list(V4_BACKBONE)
    assert [f.codec for _, f in coded.parts] == ["int8|zstd", "int8|zstd", "f16", "raw"]
    raw_bytes = sum(a.nbytes for a in split["cut"].values())
    assert len(coded.payload) < raw_bytes / 2
    # quantised features move the map a little; the text regions (p > 0.3) stay where they were
    got = mixed.outputs[prob]
    assert float(np.abs(got - full).max()) < 0.1
    np.testing.assert_array_equal(again.outputs[prob], got)
    # bytes are counted per part under each codec's name, never under their combination
    assert {"raw", "int8|zstd", "f16"} <= set(received)
    assert not any("+" in codec for codec in received)
    assert np.mean((got > 0.3) == (full > 0.3)) > 0.99
