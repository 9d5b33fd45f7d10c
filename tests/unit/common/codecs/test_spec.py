from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.codecs import ClipMethod, CodecSpec, CodecStage, SparseIndex, StageKind, parse_spec
from common.errors import CodecError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("raw", "raw"),
        ("f16", "f16"),
        ("int8", "int8"),
        ("q8", "int8"),
        ("int8:per_channel", "int8:per_channel"),
        ("int8:per_tensor", "int8"),
        ("clip:p99.9|q4", "clip:p99.9|q4"),
        ("clip:mse|q3:per_channel", "clip:mse|q3:per_channel"),
        ("clip:0,3.25|q2|ans", "clip:0,3.25|q2|ans"),
        ("q4|sparse:bitmap|ans", "q4|sparse:bitmap|ans"),
        ("q4|sparse|range", "q4|sparse:bitmap|range"),
        ("q2|zstd", "q2|zstd"),
        ("zstd", "raw|zstd"),
        ("zstd:9", "raw|zstd:9"),
        ("sparse:rle,thr=0.05", "raw|sparse:rle,thr=0.05"),
        ("clip:p99|sparse:top=0.1,bitmap", "clip:p99|raw|sparse:bitmap,top=0.1"),
        (" Q4 | ANS ", "q4|ans"),
        ("clip:0,2.5|q2:pow=0.70|ans", "clip:0,2.5|q2:pow=0.7|ans"),
        ("q3:pow=0.5,per_channel", "q3:per_channel,pow=0.5"),
        ("q3:pow=1", "q3"),
    ],
)
def test_parse_and_print_canonical(text: str, canonical: str) -> None:
    spec = parse_spec(text)
    assert str(spec) == canonical
    assert parse_spec(canonical) == spec
    assert CodecSpec.parse(canonical) == spec


def test_properties() -> None:
    spec = parse_spec("clip:p99.9|q4:per_channel|sparse:rle|ans")
    assert spec.bits == 4
    assert spec.value.per_channel
    assert spec.clip is not None and spec.clip.clip_method is ClipMethod.PERCENTILE
    assert spec.sparse is not None and spec.sparse.sparse_index is SparseIndex.RUN_LENGTH
    assert spec.entropy is not None and spec.entropy.kind is StageKind.ANS
    assert spec.needs_entropy_model and not spec.lossless
    assert parse_spec("raw|sparse:rle|zstd").lossless
    assert not parse_spec("sparse:thr=0.1").lossless


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("q9", "bit width"),
        ("q1", "bit width"),
        ("int8:per_pixel", "per_channel"),
        ("q2:pow=0.705", "multiple of 0.01"),
        ("q2:pow=3", "multiple of 0.01"),
        ("clip:p20|q4", "percentile"),
        ("clip:1,3|q4", "min <= 0 <= max"),
        ("clip:abc|q4", "expected clip"),
        ("clip:pnan|q4", "not finite"),
        ("sparse:thr=-1", "threshold"),
        ("sparse:top=2", "top fraction"),
        ("sparse:thr=0.1,top=0.5", "not both"),
        ("sparse:zigzag", "unknown argument"),
        ("zstd:99", "level"),
        ("zstd:x", "zstd:LEVEL"),
        ("ans", "add int8 or qN"),
        ("f16|range", "add int8 or qN"),
        ("q4|clip:p99", "order"),
        ("q4|q4", "order"),
        ("q4|ans|zstd", "order"),
        ("lz4", "unknown codec"),
        ("f16:fast", "no arguments"),
        ("q4:,", "empty argument"),
        ("q4|" * 100, "too long"),
    ],
)
def test_bad_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        parse_spec(text)


def test_dataclass_validation() -> None:
    with pytest.raises(CodecError, match="no value stage"):
        CodecSpec((CodecStage(StageKind.ZSTD),))
    with pytest.raises(CodecError, match="empty"):
        CodecSpec(())


_value = st.one_of(
    st.just(CodecStage(StageKind.RAW)),
    st.just(CodecStage(StageKind.FLOAT16)),
    st.builds(
        lambda b, pc: CodecStage(StageKind.QUANTIZE, bits=b, per_channel=pc),
        st.integers(2, 8),
        st.booleans(),
    ),
)
_number = st.floats(0.001, 1000, allow_nan=False).map(lambda x: round(x, 4))
_clip = st.one_of(
    st.none(),
    st.just(CodecStage(StageKind.CLIP, clip_method=ClipMethod.MSE)),
    st.builds(
        lambda p: CodecStage(StageKind.CLIP, clip_method=ClipMethod.PERCENTILE, clip_percentile=p),
        st.floats(50, 100).map(lambda x: round(x, 3)),
    ),
    st.builds(
        lambda lo, hi: CodecStage(
            StageKind.CLIP, clip_method=ClipMethod.FIXED, clip_min=-lo, clip_max=hi
        ),
        _number,
        _number,
    ),
)
_sparse = st.one_of(
    st.none(),
    st.builds(
        lambda idx, thr: CodecStage(StageKind.SPARSIFY, sparse_index=idx, threshold=thr),
        st.sampled_from(SparseIndex),
        st.one_of(st.just(0.0), _number),
    ),
    st.builds(
        lambda idx, top: CodecStage(StageKind.SPARSIFY, sparse_index=idx, keep_fraction=top),
        st.sampled_from(SparseIndex),
        st.floats(0.001, 1.0).map(lambda x: round(x, 4)).filter(lambda x: x > 0),
    ),
)


@given(_clip, _value, _sparse, st.sampled_from(["none", "ans", "range", "zstd", "zstd9"]))
def test_any_valid_spec_round_trips_through_text(
    clip: CodecStage | None, value: CodecStage, sparse: CodecStage | None, entropy: str
) -> None:
    if entropy in ("ans", "range") and value.kind is not StageKind.QUANTIZE:
        entropy = "zstd"
    stages = [s for s in (clip, value, sparse) if s is not None]
    if entropy != "none":
        kind = StageKind.ZSTD if entropy.startswith("zstd") else StageKind(entropy)
        stages.append(CodecStage(kind, level=9 if entropy == "zstd9" else 3))
    spec = CodecSpec(tuple(stages))
    assert parse_spec(str(spec)) == spec
