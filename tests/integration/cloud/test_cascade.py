"""A cascade between different models through the real gateway (FR-004): PP-OCRv4 reads a hard
frame on the device; the lines it is unsure of go, as their region of the frame, over the
device's session to the gateway, which serves PP-OCRv6's recogniser from a Triton-layout
directory; the cloud's readings equal v6's own on the same regions and fix what v4 got wrong."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.frames import render_frame
from common.pipeline import Cascade, ctc_greedy, load_pipeline
from common.pipeline._ctc import best_path_model
from common.settings import nest
from edge_agent import EdgeSettings, SessionClient
from edge_agent._refine import cascade_refiner

CLOUD = "ppocr_v6_rec_best"


async def test_doubtful_lines_are_read_again_by_the_cloud_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pipeline = load_pipeline("ppocr_v4_cascade")
    v6 = pipeline.model_path("cloud_rec")
    (tmp_path / "models" / CLOUD / "1").mkdir(parents=True)
    # bring your own model: v6's recogniser with its best-path head, in Triton's layout
    onnx.save(
        best_path_model(onnx.load(str(v6))), str(tmp_path / "models" / CLOUD / "1" / "model.onnx")
    )
    frame = render_frame(0, "hard", "test", 1)
    bgr = frame.image[:, :, ::-1].copy()
    truth = {t.text for t in frame.lines}
    settings = GatewaySettings(
        **nest(
            {
                "models_dir": tmp_path / "models",
                "server.port": 0,
                "metrics.port": None,
                "tls.insecure": True,
            }
        )
    )
    sent: list[np.ndarray] = []
    async with Gateway(settings) as gw:
        target = f"127.0.0.1:{gw.port}"
        edge = EdgeSettings(**nest({"gateway": target, "tls.insecure": True}))
        async with SessionClient(target, edge) as client:
            assert await client.wait_connected(10)
            remote = cascade_refiner(client, pipeline.spec.cascade)  # type: ignore[arg-type]

            async def refine(x: np.ndarray) -> dict[str, np.ndarray]:
                sent.append(x)
                return await remote(x)

            cascade = Cascade(pipeline, refine)
            routed = await cascade(bgr)
            everything = await Cascade(pipeline, refine, threshold=1.01)(bgr)
    local = ort.InferenceSession(str(v6), providers=["CPUExecutionProvider"])
    cloud_lines = [r for r in routed if r.route == "cloud"]
    assert cloud_lines, "the hard frame has lines v4 is unsure of"
    assert all(r.edge.confidence < cascade.threshold for r in cloud_lines)
    assert all(r.line.confidence >= cascade.threshold for r in routed if r.route == "edge")
    # what came back over the wire is what v6 reads on the same region, line by line
    regions = sent[len(cloud_lines) :]
    assert len(regions) == len(everything)
    for x, r in zip(regions, everything, strict=True):
        probs = local.run(None, {"x": x})[0]
        assert r.route == "cloud" and r.line.text == ctc_greedy(probs[0], cascade.charset).text
    # the cascade reads at least as many lines exactly as the edge alone, on this frame more
    edge_exact = sum(r.edge.text in truth for r in routed)
    cascade_exact = sum(r.line.text in truth for r in routed)
    assert cascade_exact > edge_exact
