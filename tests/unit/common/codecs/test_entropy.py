"""Entropy models: fitting, files, ids, per-channel contexts, and coded size vs ideal size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.codecs import (
    EntropyModel,
    decode,
    empirical_entropy_bits,
    encode,
    fit_entropy_model,
    peek_header,
)
from common.codecs._pipeline import prepare
from common.errors import CodecError

from .conftest import relu_activations

SPEC = "clip:0,4|q3|ans"


def _batch(n: int, seed: int) -> list[np.ndarray]:
    return [relu_activations(seed + i) for i in range(n)]


@pytest.mark.parametrize("context", ["flat", "channel", "spatial"])
@pytest.mark.parametrize("coder", ["ans", "range"])
def test_offline_model_round_trips_and_matches_the_embedded_one(context: str, coder: str) -> None:
    spec = f"clip:0,4|q3|{coder}"
    model = fit_entropy_model(spec, _batch(4, 10), cut="cut1", context=context)
    assert model.contexts == (1 if context == "flat" else 32) and model.alphabet == 8
    assert model.context == context
    x = np.concatenate([relu_activations(99), relu_activations(98)])
    with_model = decode(encode(x, spec, entropy_model=model), entropy_models=model)
    assert np.array_equal(with_model, decode(encode(x, spec)))


def test_model_file_round_trip(tmp_path: Path) -> None:
    for context in ("flat", "channel", "spatial"):
        model = fit_entropy_model(SPEC, _batch(2, 0), cut="cut1", context=context)
        loaded = EntropyModel.load(model.save(tmp_path / "m.json"))
        assert np.array_equal(loaded.probabilities, model.probabilities)
        assert loaded.model_id == model.model_id and loaded.spec == SPEC and loaded.cut == "cut1"
        assert loaded.samples == 2 * relu_activations(0).size
    flat = fit_entropy_model(SPEC, _batch(2, 0))
    per_channel = fit_entropy_model(SPEC, _batch(2, 0), context="channel")
    assert flat.model_id != per_channel.model_id


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "entropy model"),
        ('{"format": "other", "version": 1}', "not a aiml021.entropy-model"),
        (
            '{"format": "aiml021.entropy-model", "version": 1, "probabilities": [1, 2, 3]}',
            "2\\*\\*bits",
        ),
        (
            '{"format": "aiml021.entropy-model", "version": 1, "probabilities": [1, -1, 1, 1]}',
            ">= 0",
        ),
        (
            '{"format": "aiml021.entropy-model", "version": 1, "model_id": "00000000", '
            '"probabilities": [1, 1, 1, 1]}',
            "model_id does not match",
        ),
    ],
)
def test_bad_model_files_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CodecError, match=message) as info:
        EntropyModel.load(path)
    assert str(path) in str(info.value)


def test_per_channel_model_misuse_is_refused() -> None:
    model = fit_entropy_model(SPEC, _batch(1, 0), context="channel")
    with pytest.raises(CodecError, match="channel contexts"):
        encode(relu_activations(1, (1, 16, 14, 14)), SPEC, entropy_model=model)
    with pytest.raises(CodecError, match="sparse"):
        fit_entropy_model("clip:0,4|q3|sparse|ans", _batch(1, 0), context="channel")
    spatial = fit_entropy_model(SPEC, _batch(1, 0), context="spatial")
    with pytest.raises(CodecError, match="NCHW"):
        encode(relu_activations(1).reshape(1, 32, 196), SPEC, entropy_model=spatial)
    with pytest.raises(CodecError, match="channel contexts"):
        encode(relu_activations(1, (1, 16, 14, 14)), SPEC, entropy_model=spatial)
    with pytest.raises(CodecError, match=r"2\.\.3 bits"):
        fit_entropy_model("q4|ans", _batch(1, 0), context="spatial")
    with pytest.raises(CodecError, match="unknown entropy model context"):
        fit_entropy_model(SPEC, _batch(1, 0), context="temporal")
    with pytest.raises(CodecError, match="sparse"):
        encode(relu_activations(1), "clip:0,4|q3|sparse|ans", entropy_model=model)
    with pytest.raises(CodecError, match="no quantiser"):
        fit_entropy_model("f16|zstd", _batch(1, 0))
    with pytest.raises(CodecError, match="no arrays"):
        fit_entropy_model(SPEC, [])


@pytest.mark.parametrize("context", ["flat", "channel", "spatial"])
def test_coded_size_is_within_two_percent_of_the_ideal_size_under_the_model(context: str) -> None:
    model = fit_entropy_model(SPEC, _batch(6, 20), context=context)
    x = np.concatenate(_batch(8, 40))
    frame = encode(x, SPEC, entropy_model=model)
    symbols, _, _ = prepare(x, SPEC)
    ideal = model.cross_entropy_bits(symbols.reshape(x.shape))
    payload_bits = 8 * peek_header(frame).coded_bytes
    assert ideal <= payload_bits <= 1.02 * ideal
    assert empirical_entropy_bits(symbols, 8) <= ideal * 1.001 or context != "flat"


def test_per_channel_contexts_code_no_worse_than_one_distribution() -> None:
    fit, x = _batch(6, 20), np.concatenate(_batch(4, 60))
    flat = fit_entropy_model(SPEC, fit)
    per_channel = fit_entropy_model(SPEC, fit, context="channel")
    assert len(encode(x, SPEC, entropy_model=per_channel)) < len(
        encode(x, SPEC, entropy_model=flat)
    )
