"""Every message family survives binary and canonical-JSON round trips unchanged."""

from __future__ import annotations

import pytest
from aiml021.cache.v1 import cache_pb2
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.deploy.v1 import deploy_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.registry.v1 import registry_pb2
from aiml021.session.v1 import session_pb2
from aiml021.telemetry.v1 import telemetry_pb2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2
from inference import grpc_service_pb2, model_config_pb2


def _codec() -> tensor_pb2.CodecSpec:
    return tensor_pb2.CodecSpec(
        text="clip:p99.9|q4|sparse:bitmap|ans",
        stages=[
            tensor_pb2.CodecStage(
                kind=tensor_pb2.CODEC_KIND_QUANTIZE, bits=4, clip_percentile=99.9
            ),
            tensor_pb2.CodecStage(
                kind=tensor_pb2.CODEC_KIND_SPARSIFY,
                threshold=0.01,
                sparse_index=tensor_pb2.SPARSE_INDEX_BITMAP,
            ),
            tensor_pb2.CodecStage(kind=tensor_pb2.CODEC_KIND_ANS),
        ],
    )


def _encoding() -> tensor_pb2.EncodedTensorHeader:
    return tensor_pb2.EncodedTensorHeader(
        codec=_codec(),
        dtype=tensor_pb2.DATA_TYPE_FLOAT32,
        shape=[1, 32, 14, 14],
        quant=tensor_pb2.QuantParams(scale=[0.05], zero_point=[0], channel_axis=-1, bits=4),
        original_bytes=25088,
        coded_bytes=611,
        crc32c=0xDEADBEEF,
        entropy_model_id="fmnist-branchy/cut1/q4",
    )


def _context() -> request_pb2.RequestContext:
    return request_pb2.RequestContext(
        rtt=Duration(nanos=50_000_000),
        bandwidth_bps=10e6,
        edge_load=0.4,
        exit_confidences=[0.61, 0.82],
        entropy=0.9,
        modality=request_pb2.MODALITY_IMAGE,
        device_class="phone-mid",
    )


def _timing() -> request_pb2.TimingBreakdown:
    return request_pb2.TimingBreakdown(
        edge_compute=Duration(nanos=130_000),
        network=Duration(nanos=25_000_000),
        cloud_compute=Duration(nanos=400_000),
        total=Duration(nanos=27_000_000),
    )


def _policy_update() -> policy_pb2.PolicyUpdate:
    return policy_pb2.PolicyUpdate(
        policy_id="linucb",
        policy_version="7",
        kind="linucb",
        exit_thresholds={"exit1": 0.83, "exit2": 0.9},
        cut_point="stage1_out",
        codec=_codec(),
        state=b"\x00\x01",
        created_at=Timestamp(seconds=1_790_000_000),
    )


SESSION_FRAMES: list[Message] = [
    session_pb2.ConnectRequest(
        hello=session_pb2.Hello(
            device_id="dev-1",
            protocol_version=1,
            capabilities=session_pb2.Capabilities(
                codecs=[tensor_pb2.CODEC_KIND_QUANTIZE, tensor_pb2.CODEC_KIND_ANS],
                max_inflight_requests=64,
                max_chunk_bytes=65536,
                accepts_policy_updates=True,
            ),
            agent_version="0.1.0",
            device_class="phone-mid",
        )
    ),
    session_pb2.ConnectRequest(
        infer_header=session_pb2.InferHeader(
            request_id="r1",
            idempotency_key="dev-1/r1",
            model_name="fmnist-branchy",
            model_version="1",
            cut_point="stage1_out",
            encoding=_encoding(),
            total_bytes=611,
            deadline=Timestamp(seconds=1_790_000_000, nanos=5),
            priority=request_pb2.PRIORITY_HIGH,
            context=_context(),
            deferred=True,
            payload_digest=b"\x11" * 32,
        )
    ),
    session_pb2.ConnectRequest(
        tensor_chunk=session_pb2.TensorChunk(
            request_id="r1", offset=512, data=b"\x01" * 99, last=True
        )
    ),
    session_pb2.ConnectRequest(cancel=session_pb2.Cancel(request_id="r1")),
    session_pb2.ConnectRequest(
        telemetry_batch=telemetry_pb2.TelemetryBatch(
            device_id="dev-1",
            events=[
                telemetry_pb2.TelemetryEvent(
                    request_id="r0",
                    route=request_pb2.ROUTE_EDGE,
                    exit_index=0,
                    timing=_timing(),
                    bytes_sent=0,
                    cache_hit=False,
                    codec="q4|ans",
                    confidence=0.97,
                )
            ],
            dropped=3,
        )
    ),
    session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=42, sent_at=Timestamp(seconds=1))),
    session_pb2.ConnectResponse(
        welcome=session_pb2.Welcome(
            session_id="s-1",
            device_id="dev-1",
            protocol_version=1,
            limits=session_pb2.NegotiatedLimits(
                max_request_bytes=1 << 20,
                max_chunk_bytes=65536,
                max_inflight_requests=64,
                max_session_buffer_bytes=4 << 20,
                reassembly_timeout=Duration(seconds=5),
                ping_interval=Duration(seconds=10),
            ),
            initial_credit_bytes=1 << 20,
            gateway_version="0.1.0",
            policy=_policy_update(),
        )
    ),
    session_pb2.ConnectResponse(
        infer_result=session_pb2.InferResult(
            request_id="r1",
            outputs=[
                tensor_pb2.Tensor(
                    name="logits",
                    dtype=tensor_pb2.DATA_TYPE_FLOAT32,
                    shape=[1, 10],
                    contents=b"\0" * 40,
                )
            ],
            top_class=3,
            confidence=0.93,
            route=request_pb2.ROUTE_CLOUD,
            served_model_version="1",
            timing=_timing(),
            cached=True,
        )
    ),
    session_pb2.ConnectResponse(
        infer_error=session_pb2.InferError(
            request_id="r2",
            status=status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="shape [1, 3] != [1, 10]"
            ),
        )
    ),
    session_pb2.ConnectResponse(credit=session_pb2.Credit(bytes=65536, requests=4)),
    session_pb2.ConnectResponse(policy_update=_policy_update()),
    session_pb2.ConnectResponse(
        drain=session_pb2.Drain(
            reason="shutdown",
            reconnect_after=Duration(seconds=2),
            alternate_endpoint="gw-2:7443",
            close_at=Timestamp(seconds=2),
        )
    ),
    session_pb2.ConnectResponse(pong=session_pb2.Pong(nonce=42, ping_sent_at=Timestamp(seconds=1))),
]

OTHER_MESSAGES: list[Message] = [
    policy_pb2.DecideRequest(
        context=policy_pb2.DecisionContext(
            device_id="dev-1",
            model_name="fmnist-branchy",
            exit_index=0,
            exit_confidences=[0.7],
            entropy=1.1,
            rtt=Duration(nanos=50_000_000),
            bandwidth_bps=1e7,
            edge_load=0.2,
            deadline=Duration(nanos=200_000_000),
            modality=request_pb2.MODALITY_IMAGE,
            cost_budget=0.001,
            device_class="phone-mid",
        )
    ),
    policy_pb2.DecideResponse(
        decision=policy_pb2.Decision(
            action=policy_pb2.ACTION_OFFLOAD,
            target_model="fmnist-branchy",
            target_version="1",
            cut_point="stage1_out",
            codec=_codec(),
            expected_latency=Duration(nanos=31_000_000),
            threshold=0.83,
            policy_id="heuristic",
            policy_version="1",
            propensity=0.9,
            decision_id="d-1",
        )
    ),
    policy_pb2.ReportOutcomeRequest(
        outcomes=[
            policy_pb2.Outcome(
                decision_id="d-1",
                correct=True,
                latency=Duration(nanos=1),
                deadline_met=True,
                bytes_sent=611,
                cloud_cost=0.0001,
            )
        ]
    ),
    policy_pb2.GetPolicyResponse(policy=_policy_update()),
    registry_pb2.GetModelResponse(
        model=registry_pb2.Model(
            name="fmnist-branchy",
            default_version="1",
            versions=[
                registry_pb2.ModelVersion(
                    version="1",
                    state=registry_pb2.VERSION_STATE_READY,
                    inputs=[
                        tensor_pb2.TensorSpec(
                            name="input", dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[-1, 1, 28, 28]
                        )
                    ],
                    cut_points=[
                        registry_pb2.CutPoint(
                            name="stage1_out",
                            index=0,
                            shape=[32, 14, 14],
                            activation_bytes_float32=25088,
                            activation_bytes_by_codec={"q4|ans": 611},
                            head_latency=Duration(nanos=130_000),
                            tail_latency=Duration(nanos=210_000),
                            default_codec=_codec(),
                        )
                    ],
                    exits=[
                        registry_pb2.Exit(
                            name="exit1",
                            index=0,
                            logits_tensor="exit1_logits",
                            temperature=1.3,
                            threshold=0.83,
                        )
                    ],
                    manifest_sha256="ab" * 32,
                )
            ],
        )
    ),
    registry_pb2.ListModelsResponse(next_page_token="t"),
    telemetry_pb2.ReportResponse(accepted=5),
    cache_pb2.PutRequest(
        model_name="fmnist-branchy",
        content_hash="cd" * 32,
        entry=cache_pb2.CacheEntry(
            top_class=1, confidence=0.99, model_version="1", stored_at=Timestamp(seconds=3)
        ),
        ttl=Duration(seconds=60),
    ),
    cache_pb2.GetResponse(found=True, entry=cache_pb2.CacheEntry(top_class=2)),
    deploy_pb2.GetRolloutResponse(
        rollout=deploy_pb2.Rollout(
            model_name="fmnist-branchy",
            stable_version="1",
            candidate_version="2",
            mode=deploy_pb2.ROLLOUT_MODE_CANARY,
            traffic_fraction=0.1,
            rollback=deploy_pb2.RollbackPolicy(max_error_rate=0.05, min_requests=100),
            state=deploy_pb2.ROLLOUT_STATE_ACTIVE,
        ),
        stats=deploy_pb2.RolloutStats(
            candidate_requests=10, shadow_agreement=0.99, latency_delta_ms=-0.5
        ),
    ),
    grpc_service_pb2.ModelInferRequest(
        model_name="fmnist-branchy",
        model_version="1",
        id="7",
        parameters={
            "priority": grpc_service_pb2.InferParameter(uint64_param=2),
            "timeout": grpc_service_pb2.InferParameter(double_param=0.5),
        },
        inputs=[
            grpc_service_pb2.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[1, 1, 28, 28]
            )
        ],
        outputs=[grpc_service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
        raw_input_contents=[b"\0" * 3136],
    ),
    grpc_service_pb2.ModelStreamInferResponse(
        error_message="",
        infer_response=grpc_service_pb2.ModelInferResponse(
            model_name="m", raw_output_contents=[b"\1" * 40]
        ),
    ),
    grpc_service_pb2.ModelConfigResponse(
        config=model_config_pb2.ModelConfig(
            name="m",
            platform="onnxruntime_onnx",
            max_batch_size=64,
            input=[
                model_config_pb2.ModelInput(
                    name="input", data_type=model_config_pb2.TYPE_FP32, dims=[1, 28, 28]
                )
            ],
            dynamic_batching=model_config_pb2.ModelDynamicBatching(
                max_queue_delay_microseconds=500
            ),
        )
    ),
    grpc_service_pb2.RepositoryIndexResponse(
        models=[
            grpc_service_pb2.RepositoryIndexResponse.ModelIndex(
                name="m", version="1", state="READY"
            )
        ]
    ),
]


def _id(message: Message) -> str:
    which = [f.name for f, _ in message.ListFields()]
    return f"{type(message).__name__}:{which[0] if which else 'empty'}"


@pytest.mark.parametrize("message", SESSION_FRAMES + OTHER_MESSAGES, ids=_id)
def test_binary_round_trip(message: Message) -> None:
    data = message.SerializeToString(deterministic=True)
    decoded = type(message).FromString(data)
    assert decoded == message
    assert decoded.SerializeToString(deterministic=True) == data


@pytest.mark.parametrize("message", SESSION_FRAMES + OTHER_MESSAGES, ids=_id)
def test_canonical_json_round_trip(message: Message) -> None:
    text = json_format.MessageToJson(message)
    decoded = json_format.Parse(text, type(message)())
    assert decoded == message


def test_session_frames_cover_every_oneof_member() -> None:
    seen = {
        (type(frame).__name__, frame.WhichOneof("frame"))
        for frame in SESSION_FRAMES
        if isinstance(frame, session_pb2.ConnectRequest | session_pb2.ConnectResponse)
    }
    for cls in (session_pb2.ConnectRequest, session_pb2.ConnectResponse):
        members = {f.name for f in cls.DESCRIPTOR.oneofs_by_name["frame"].fields}
        assert {m for (c, m) in seen if c == cls.__name__} == members


def test_enum_zero_values_are_unspecified() -> None:
    # AIP-126: the zero value means "not set" and is rejected when received.
    enums = [
        tensor_pb2.DataType,
        tensor_pb2.CodecKind,
        tensor_pb2.SparseIndex,
        request_pb2.Route,
        request_pb2.Priority,
        request_pb2.Modality,
        policy_pb2.Action,
        registry_pb2.VersionState,
        deploy_pb2.RolloutMode,
        deploy_pb2.RolloutState,
    ]
    for enum in enums:
        assert enum.Name(0).endswith("_UNSPECIFIED"), enum.DESCRIPTOR.full_name


def test_triton_field_numbers_match_the_published_protocol() -> None:
    # Spot checks of the numbers tritonclient depends on; a change here breaks the wire format.
    infer_parameter = grpc_service_pb2.InferParameter.DESCRIPTOR.fields_by_name
    assert {n: f.number for n, f in infer_parameter.items()} == {
        "bool_param": 1,
        "int64_param": 2,
        "string_param": 3,
        "double_param": 4,
        "uint64_param": 5,
    }
    request = grpc_service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert request["raw_input_contents"].number == 7
    assert request["outputs"].number == 6
    response = grpc_service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name
    assert response["raw_output_contents"].number == 6
    stream = grpc_service_pb2.ModelStreamInferResponse.DESCRIPTOR.fields_by_name
    assert (stream["error_message"].number, stream["infer_response"].number) == (1, 2)
    config = model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name
    assert (config["max_batch_size"].number, config["dynamic_batching"].number) == (4, 11)
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    stream_infer = service.methods_by_name["ModelStreamInfer"]
    assert stream_infer.output_type.full_name == "inference.ModelStreamInferResponse"
