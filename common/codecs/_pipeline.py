"""encode / decode: run a codec pipeline (clip -> value -> sparse -> entropy) into one frame.

Payload layout after the header: ``[sparse index][values]``, where values are raw little-endian
elements (raw, f16), bit-packed symbols (int8/qN), one byte per symbol (qN|zstd) or entropy-coded
32-bit words (ans, range). With zstd the whole payload is one zstd frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from common.codecs import _zstd
from common.codecs._context import count_spatial, decode_spatial, encode_spatial
from common.codecs._entropy import (
    EntropyModel,
    EntropyParams,
    channel_axis,
    channel_groups,
    decode_symbols,
    embedded_model,
    encode_symbols,
    histogram_frequencies,
)
from common.codecs._float16 import to_float16
from common.codecs._frame import (
    DecodeLimits,
    FrameHeader,
    build_frame,
    checksum,
    dtype_code,
    parse_header,
)
from common.codecs._quant import (
    choose_params,
    clip_range,
    compand,
    dequantize,
    pack_bits,
    packed_size,
    quantize,
    unpack_bits,
    zero_symbols,
)
from common.codecs._sparse import SparseParams, decode_index, encode_index, sparsify
from common.codecs._spec import CodecSpec, StageKind, parse_spec
from common.errors import CodecError

log = logging.getLogger(__name__)

EntropyModels = EntropyModel | Mapping[str, EntropyModel] | Iterable[EntropyModel] | None


def _as_spec(spec: CodecSpec | str) -> CodecSpec:
    return spec if isinstance(spec, CodecSpec) else parse_spec(spec)


def prepare(array: np.ndarray, spec: CodecSpec) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """Run clip, sparsify and the value stage: (values or symbols, quant params, sparse mask).

    Values are flat and, with a sparse stage, restricted to the non-zero positions. Shared by
    :func:`encode` and the entropy-model fitting, which counts exactly the symbols coded.
    """
    spec = _as_spec(spec)
    x = np.asarray(array)
    dtype_code(x.dtype)
    value, sparse = spec.value, spec.sparse
    if not spec.lossless and x.dtype.kind != "f":
        raise CodecError(f"codec {spec} is lossy and needs float input, got {x.dtype}")
    if (spec.clip is not None or value.kind is StageKind.QUANTIZE) and not np.all(np.isfinite(x)):
        raise CodecError(f"codec {spec} needs finite values (input has NaN or inf)")
    rng = clip_range(x, spec.clip, spec.bits)
    work = x
    if rng is not None and value.kind is not StageKind.QUANTIZE:
        work = np.clip(x, rng[0], rng[1])
    if sparse is not None:
        work = sparsify(work, sparse)
    params = None
    if value.kind is StageKind.QUANTIZE:
        if value.gamma != 1.0:
            work = compand(work, value.gamma)
            rng = (
                None
                if rng is None
                else (float(compand(rng[0], value.gamma)), float(compand(rng[1], value.gamma)))
            )
        params = choose_params(work, value.bits, value.per_channel, rng, value.gamma)
        sym = quantize(work, params)
        mask = (sym != zero_symbols(params, x.shape)).reshape(-1) if sparse else None
        flat = sym.reshape(-1)
    else:
        vals = to_float16(work) if value.kind is StageKind.FLOAT16 else work
        flat = vals.reshape(-1)
        mask = (flat != 0) if sparse else None
    return (flat[mask] if mask is not None else flat), params, mask


def encode(
    array: np.ndarray, spec: CodecSpec | str, *, entropy_model: EntropyModel | None = None
) -> bytes:
    """Code ``array`` with ``spec`` into one self-describing frame.

    ``entropy_model`` (fitted offline for this spec, see :func:`fit_entropy_model`) is used by
    ans/range stages; without it the frame embeds the tensor's own symbol histogram.
    Raises CodecError when the input does not suit the spec (dtype, non-finite values).
    """
    spec = _as_spec(spec)
    x = np.asarray(array)
    values, params, mask = prepare(x, spec)
    value, entropy = spec.value, spec.entropy
    records: list[tuple[StageKind, bytes]] = [
        (value.kind, params.to_bytes() if params is not None else b"")
    ]
    sections: list[bytes] = []
    if mask is not None and spec.sparse is not None:
        index = encode_index(mask, spec.sparse.sparse_index)
        sparse_params = SparseParams(spec.sparse.sparse_index, int(values.size), len(index))
        records.append((StageKind.SPARSIFY, sparse_params.to_bytes()))
        sections.append(index)
    if entropy is not None and entropy.kind is not StageKind.ZSTD:
        assert params is not None  # spec validation: ans/range follow a quantiser
        if entropy_model is not None:
            if entropy_model.alphabet != params.levels:
                raise CodecError(
                    f"entropy model has {entropy_model.alphabet} symbols; {spec} needs "
                    f"{params.levels}"
                )
            ep = EntropyParams(entropy_model.model_id, None)
            if entropy_model.context == "spatial":
                _check_contexts(entropy_model, x.shape, mask)
                sections.append(
                    encode_spatial(entropy.kind, values.reshape(x.shape), entropy_model.rows32)
                )
            else:
                groups = _context_groups(entropy_model, values, x.shape, mask)
                sections.append(encode_symbols(entropy.kind, groups, entropy_model.categorical))
        else:
            freq = histogram_frequencies(values, params.levels)
            ep = EntropyParams(None, freq)
            sections.append(encode_symbols(entropy.kind, [values], [embedded_model(freq)]))
        records.append((entropy.kind, ep.to_bytes()))
    elif params is not None:
        zstd = entropy is not None
        sections.append(values.tobytes() if zstd else pack_bits(values, params.bits))
    else:
        sections.append(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
    payload = b"".join(sections)
    if entropy is not None and entropy.kind is StageKind.ZSTD:
        payload = _zstd.compress(payload, entropy.level)
        records.append((StageKind.ZSTD, b""))
    return build_frame(x.dtype, x.shape, records, payload)


def _check_contexts(model: EntropyModel, shape: tuple[int, ...], mask: np.ndarray | None) -> None:
    if mask is not None:
        raise CodecError(f"a {model.context} entropy model cannot follow a sparse stage")
    if model.context == "spatial" and len(shape) != 4:
        raise CodecError(f"a spatial entropy model needs NCHW tensors; tensor shape is {shape}")
    if not shape or shape[channel_axis(len(shape))] != model.contexts:
        raise CodecError(
            f"entropy model has {model.contexts} channel contexts; tensor shape is {shape}"
        )


def _context_groups(
    model: EntropyModel, values: np.ndarray, shape: tuple[int, ...], mask: np.ndarray | None
) -> list[np.ndarray]:
    if model.contexts == 1:
        return [values]
    _check_contexts(model, shape, mask)
    return list(channel_groups(values.reshape(shape)))


def fit_entropy_model(
    spec: CodecSpec | str,
    arrays: Iterable[np.ndarray],
    *,
    cut: str = "",
    context: str = "flat",
) -> EntropyModel:
    """Fit the categorical model of the symbols ``spec`` codes, over real activations.

    Counts exactly the symbols an ans/range stage would code (after clip, quantisation and, with a
    sparse stage, only the non-zeros); store the result with :meth:`EntropyModel.save`.
    ``context``: "flat" (one distribution), "channel" (one per channel, axis 1) or "spatial"
    (per channel and the left and upper neighbours' symbols; NCHW, at most 3 bits). Channel and
    spatial contexts cannot follow a sparse stage.
    """
    spec = _as_spec(spec)
    if spec.bits == 0:
        raise CodecError(f"codec {spec} has no quantiser, so no symbols to model")
    if context not in ("flat", "channel", "spatial"):
        raise CodecError(f"unknown entropy model context {context!r} (flat, channel, spatial)")
    if context != "flat" and spec.sparse is not None:
        raise CodecError(f"a {context} entropy model cannot follow a sparse stage")
    if context == "spatial" and spec.bits > 3:
        raise CodecError("spatial entropy models are limited to 2..3 bits (L**3 rows per channel)")
    levels = 1 << spec.bits
    counts: np.ndarray | None = None
    for array in arrays:
        values, _, _ = prepare(array, spec)
        if context == "spatial":
            found = count_spatial(values.reshape(np.shape(array)), levels)
            counts = found if counts is None else counts + found
        elif context == "channel":
            groups = channel_groups(values.reshape(np.shape(array)))
            if counts is None:
                counts = np.zeros((groups.shape[0], levels), np.int64)
            if groups.shape[0] != counts.shape[0]:
                raise CodecError("arrays for a per-channel model must share their channel count")
            keys = np.arange(groups.shape[0])[:, None] * levels + groups
            counts += np.bincount(keys.reshape(-1), minlength=counts.size).reshape(counts.shape)
        else:
            counts = np.zeros(levels, np.int64) if counts is None else counts
            counts += np.bincount(values, minlength=levels)[:levels]
    if counts is None:
        raise CodecError("no arrays to fit an entropy model on")
    return EntropyModel.from_counts(counts, spec=str(spec), cut=cut)


def peek_header(frame: bytes | bytearray | memoryview) -> FrameHeader:
    """Parse and validate a frame's header only (works on a prefix holding the header)."""
    return parse_header(frame, None)


def _model_table(models: EntropyModels) -> dict[str, EntropyModel]:
    if models is None:
        return {}
    if isinstance(models, EntropyModel):
        return {models.model_id_hex: models}
    if isinstance(models, Mapping):
        return {m.model_id_hex: m for m in models.values()}
    return {m.model_id_hex: m for m in models}


def decode(
    frame: bytes | bytearray | memoryview,
    *,
    limits: DecodeLimits | None = None,
    entropy_models: EntropyModels = None,
    check: Callable[[FrameHeader], None] | None = None,
) -> np.ndarray:
    """Decode a frame written by :func:`encode`.

    Everything is validated before anything is allocated from a declared size: header fields,
    ``limits`` (default :class:`DecodeLimits`), truncation, trailing bytes, the CRC32C, and every
    section length. Any problem raises CodecError with a precise message, never another error.
    ``check`` sees the parsed header first (e.g. to hold the frame to a dtype and shape declared
    elsewhere, or to read its pipeline), so the header is parsed once; what it raises propagates.
    """
    limits = limits or DecodeLimits()
    view = memoryview(frame).cast("B")
    header = parse_header(view, limits)
    if check is not None:
        check(header)
    expected = header.frame_bytes
    if len(view) < expected:
        raise CodecError(f"frame truncated: {len(view)} bytes, header declares {expected}")
    if len(view) > expected:
        raise CodecError(f"frame has {len(view) - expected} bytes after its declared end")
    actual = checksum(view)
    if actual != header.crc32c:
        raise CodecError(
            f"frame checksum mismatch (CRC32C {actual:08x}, header says {header.crc32c:08x})"
        )
    try:
        return _decode_payload(header, view[header.header_bytes :], _model_table(entropy_models))
    except CodecError:
        raise
    except Exception as exc:  # a malformed payload must never escape as another error type
        raise CodecError(f"frame payload malformed: {type(exc).__name__}: {exc}") from exc


def _max_body(header: FrameHeader) -> int:
    n = header.elements
    return 5 * n + max(header.original_bytes, 4 * n) + 64


def _take(body: memoryview, at: int, size: int, what: str) -> memoryview:
    if at + size > len(body):
        raise CodecError(f"{what} needs {size} bytes, {len(body) - at} left in the payload")
    return body[at : at + size]


def _decode_payload(
    header: FrameHeader, body: memoryview, models: dict[str, EntropyModel]
) -> np.ndarray:
    spec, n, shape = header.spec, header.elements, header.shape
    entropy = spec.entropy
    if entropy is not None and entropy.kind is StageKind.ZSTD:
        body = _zstd.decompress(body, _max_body(header))
    at, mask, count = 0, None, n
    if header.sparse is not None:
        index = _take(body, 0, header.sparse.index_bytes, "sparse index")
        mask = decode_index(index, header.sparse, n)
        at, count = len(index), header.sparse.nnz
    rest = body[at:]
    quant = header.quant
    if quant is not None:
        if entropy is not None and entropy.kind is not StageKind.ZSTD:
            symbols = _decode_entropy(header, rest, models, count, mask is not None)
        elif entropy is not None:
            symbols = np.frombuffer(_exact(rest, count, "symbols"), np.uint8)
            if symbols.size and int(symbols.max()) >= quant.levels:
                raise CodecError(f"symbol {int(symbols.max())} outside the {quant.bits}-bit range")
        else:
            symbols = unpack_bits(
                _exact(rest, packed_size(count, quant.bits), "symbols"), quant.bits, count
            )
        if mask is not None:
            full = np.empty(shape, np.uint8)
            full[...] = zero_symbols(quant, shape)
            full.reshape(-1)[mask] = symbols
            symbols = full
        return dequantize(symbols.reshape(shape), quant).astype(header.dtype, copy=False)
    vdtype = np.dtype("<f2") if spec.value.kind is StageKind.FLOAT16 else header.dtype
    values = np.frombuffer(_exact(rest, count * vdtype.itemsize, "values"), vdtype)
    if mask is not None:
        full_values = np.zeros(n, vdtype)
        full_values[mask] = values
        values = full_values
    return values.astype(header.dtype).reshape(shape)


def _exact(data: memoryview, size: int, what: str) -> memoryview:
    if len(data) != size:
        raise CodecError(f"{what} section is {len(data)} bytes, expected {size}")
    return data


def _decode_entropy(
    header: FrameHeader, data: memoryview, models: dict[str, EntropyModel], count: int, sparse: bool
) -> np.ndarray:
    params, entropy = header.entropy, header.spec.entropy
    assert params is not None and entropy is not None
    if params.frequencies is not None:
        return decode_symbols(entropy.kind, data, [embedded_model(params.frequencies)], [count])
    wanted = params.model_id_hex or ""
    model = models.get(wanted)
    if model is None:
        raise CodecError(
            f"frame was coded with entropy model {wanted}; decoder has "
            f"{sorted(models) or 'none'} (load the cut's model from the bundle)"
        )
    if model.contexts == 1:
        return decode_symbols(entropy.kind, data, model.categorical, [count])
    shape = header.shape
    if model.context == "spatial":
        if sparse or len(shape) != 4 or shape[1] != model.contexts:
            raise CodecError(
                f"entropy model {wanted} (spatial, {model.contexts} channels) does not fit frame shape {shape}"
            )
        return decode_spatial(entropy.kind, data, model.rows32, shape).reshape(-1)
    if sparse or not shape or shape[channel_axis(len(shape))] != model.contexts:
        raise CodecError(
            f"entropy model {wanted} has {model.contexts} channel contexts; frame shape {shape}"
        )
    axis = channel_axis(len(shape))
    flat = decode_symbols(
        entropy.kind, data, model.categorical, [count // model.contexts] * model.contexts
    )
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(flat.reshape(moved), 0, axis).reshape(-1)


__all__ = ["EntropyModels", "decode", "encode", "fit_entropy_model", "peek_header", "prepare"]
