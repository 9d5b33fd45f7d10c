"""Entropy coding of quantised symbols with constriction (ANS or range coder).

The probability model is a categorical distribution over the quantiser's alphabet, fitted
offline per cut point from real activations and stored in the model bundle as a small JSON file
(:class:`EntropyModel`). Frames name the model by id; a frame coded without a model embeds the
tensor's own symbol histogram (16-bit frequencies) instead, so it still decodes on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import struct
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from common.codecs import _registry
from common.codecs._spec import StageKind
from common.errors import CodecError

FORMAT = "aiml021.entropy-model"
FORMAT_VERSION = 1
_EXTERNAL, _EMBEDDED = 0, 1
_FREQ_TOTAL = 65000


@dataclasses.dataclass(frozen=True, eq=False)
class EntropyModel:
    """A categorical probability model over ``alphabet`` symbols, fitted for one codec spec."""

    # float64, each row over the alphabet sums to 1. Shape (alphabet,): one distribution;
    # (channels, alphabet): one per channel (axis 1, or 0 for 1-D tensors);
    # (channels, alphabet, alphabet, alphabet): per channel and the symbols left of and above
    # each element of an NCHW tensor (spatial context, see _context.py).
    probabilities: np.ndarray
    spec: str = ""  # the codec spec whose symbols it models
    cut: str = ""  # the cut point it was fitted on
    samples: int = 0  # number of symbols counted

    def __post_init__(self) -> None:
        p = self.probabilities
        if p.ndim not in (1, 2, 4) or p.shape[-1] not in (4, 8, 16, 32, 64, 128, 256) or not p.size:
            raise CodecError(f"entropy model alphabet must be 2**bits (2..8 bits), got {p.shape}")
        if p.ndim == 4 and not p.shape[1] == p.shape[2] == p.shape[3]:
            raise CodecError(f"spatial entropy model must be (channels, L, L, L), got {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.all(p.sum(axis=-1) > 0):
            raise CodecError("entropy model probabilities must be finite, >= 0, not all zero")

    @property
    def alphabet(self) -> int:
        return int(self.probabilities.shape[-1])

    @property
    def context(self) -> str:
        """ "flat" (one distribution), "channel" or "spatial" (channel, left, up)."""
        return {1: "flat", 2: "channel", 4: "spatial"}[self.probabilities.ndim]

    @property
    def contexts(self) -> int:
        """1 for one distribution, else the number of channels with their own distribution(s)."""
        return 1 if self.probabilities.ndim == 1 else int(self.probabilities.shape[0])

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """(contexts, alphabet) float64 table, rows normalised."""
        rows = self.probabilities.reshape(-1, self.alphabet)
        return rows / rows.sum(axis=1, keepdims=True)

    @functools.cached_property
    def rows32(self) -> np.ndarray:
        """float32 copy of :attr:`rows`, the per-symbol tables given to constriction."""
        return np.ascontiguousarray(self.rows, np.float32)

    @functools.cached_property
    def model_id(self) -> int:
        """32-bit id (CRC32C of the probability table), written into frames."""
        shape = np.asarray(self.probabilities.shape, "<u4").tobytes()
        return int(google_crc32c.value(shape + self.probabilities.astype("<f8").tobytes()))

    @property
    def model_id_hex(self) -> str:
        return f"{self.model_id:08x}"

    @functools.cached_property
    def categorical(self) -> list[Any]:
        """The constriction model of each context (built once, reused by every encode/decode)."""
        rows = self.probabilities.reshape(self.contexts, self.alphabet)
        return [_categorical(row) for row in rows]

    def cross_entropy_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``symbols`` under this model, in bits.

        For a per-channel model ``symbols`` must be shaped like the tensor.
        """
        with np.errstate(divide="ignore"):
            if self.context == "flat":
                return float(-np.log2(self.rows[0][symbols.reshape(-1)]).sum())
            if self.context == "channel":
                groups = channel_groups(symbols)
                return float(-np.log2(self.rows[np.arange(len(groups))[:, None], groups]).sum())
            from common.codecs._context import spatial_rows

            rows = spatial_rows(symbols, self.alphabet)
            return float(-np.log2(self.rows[rows, symbols.reshape(-1)]).sum())

    @classmethod
    def from_counts(cls, counts: np.ndarray, *, spec: str = "", cut: str = "") -> EntropyModel:
        """Model from symbol counts, with add-half smoothing so unseen symbols stay codable."""
        counts = np.asarray(counts, np.float64)
        probs = (counts + 0.5) / (counts.sum(axis=-1, keepdims=True) + 0.5 * counts.shape[-1])
        # 7 significant digits keep files small; the rounded table is the model.
        probs = np.asarray([float(f"{p:.7g}") for p in probs.reshape(-1)]).reshape(probs.shape)
        return cls(probs, spec=spec, cut=cut, samples=int(counts.sum()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model_id": self.model_id_hex,
            "spec": self.spec,
            "cut": self.cut,
            "samples": self.samples,
            "probabilities": self.probabilities.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (a few KB at most)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> EntropyModel:
        """Read a model written by :meth:`save`; CodecError naming the file when invalid."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} file")
            model = cls(
                np.asarray(doc["probabilities"], np.float64),
                spec=str(doc.get("spec", "")),
                cut=str(doc.get("cut", "")),
                samples=int(doc.get("samples", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError, CodecError) as exc:
            raise CodecError(f"entropy model {path}: {exc}") from exc
        if doc.get("model_id") not in (None, model.model_id_hex):
            raise CodecError(f"entropy model {path}: model_id does not match its probabilities")
        return model


def _categorical(weights: np.ndarray) -> Any:
    model_mod = _registry.constriction().stream.model
    return model_mod.Categorical(weights.astype(np.float64), perfect=False)


@dataclasses.dataclass(frozen=True, eq=False)
class EntropyParams:
    """Frame parameters of an ans/range stage: an external model id or an embedded histogram."""

    model_id: int | None
    frequencies: np.ndarray | None  # uint16 (alphabet,), when embedded

    def to_bytes(self) -> bytes:
        if self.frequencies is None:
            return struct.pack("<BI", _EXTERNAL, self.model_id or 0)
        freq = self.frequencies.astype("<u2")
        return struct.pack("<BH", _EMBEDDED, freq.size) + freq.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, alphabet: int) -> EntropyParams:
        if data[:1] == bytes([_EXTERNAL]) and len(data) == 5:
            return cls(struct.unpack_from("<I", data, 1)[0], None)
        if data[:1] == bytes([_EMBEDDED]) and len(data) >= 3:
            (size,) = struct.unpack_from("<H", data, 1)
            if size != alphabet or len(data) != 3 + 2 * size:
                raise CodecError(
                    f"embedded entropy model has {size} symbols in {len(data)} bytes; the "
                    f"quantiser has {alphabet}"
                )
            freq = np.frombuffer(data, "<u2", size, 3).astype(np.uint16)
            if not freq.any():
                raise CodecError("embedded entropy model has all-zero frequencies")
            return cls(None, freq)
        raise CodecError(f"entropy stage parameters malformed ({len(data)} bytes)")

    @property
    def model_id_hex(self) -> str | None:
        return None if self.model_id is None else f"{self.model_id:08x}"


def histogram_frequencies(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """16-bit frequencies of the symbols, every present symbol at least 1."""
    counts = np.bincount(symbols.reshape(-1), minlength=alphabet)[:alphabet]
    total = int(counts.sum())
    if total == 0:
        return np.ones(alphabet, np.uint16)
    freq = np.floor(counts * (_FREQ_TOTAL / total))
    return np.maximum(freq, counts > 0).astype(np.uint16)


@functools.lru_cache(maxsize=64)
def _embedded_categorical(key: bytes) -> Any:
    return _categorical(np.frombuffer(key, np.uint16).astype(np.float64))


def embedded_model(frequencies: np.ndarray) -> Any:
    """The constriction model of an embedded histogram (cached: equal tables are common)."""
    return _embedded_categorical(frequencies.astype(np.uint16).tobytes())


def channel_axis(ndim: int) -> int:
    """Axis whose index is the context of a per-channel model (NCHW channels)."""
    return 1 if ndim >= 2 else 0


def channel_groups(symbols: np.ndarray) -> np.ndarray:
    """(channels, rest) view of a tensor's symbols, channel-major."""
    axis = channel_axis(symbols.ndim)
    channels = symbols.shape[axis]
    rest = symbols.size // channels if channels else 0
    return np.moveaxis(symbols, axis, 0).reshape(channels, rest)


def encode_symbols(kind: StageKind, groups: list[np.ndarray], models: list[Any]) -> bytes:
    """Entropy-code groups of uint8 symbols, group i under models[i]; 32-bit LE words.

    Groups are decoded in the order given (the ANS stack is filled in reverse).
    """
    stream = _registry.constriction().stream
    if kind is StageKind.ANS:
        coder = stream.stack.AnsCoder()
        for data, model in zip(reversed(groups), reversed(models), strict=True):
            if data.size:
                coder.encode_reverse(data.reshape(-1).astype(np.int32), model)
    else:
        coder = stream.queue.RangeEncoder()
        for data, model in zip(groups, models, strict=True):
            if data.size:
                coder.encode(data.reshape(-1).astype(np.int32), model)
    return np.asarray(coder.get_compressed(), "<u4").tobytes()


def decode_symbols(
    kind: StageKind, data: memoryview, models: list[Any], counts: list[int]
) -> np.ndarray:
    """Decode ``counts[i]`` symbols under ``models[i]`` each, concatenated; CodecError if bad."""
    if len(data) % 4:
        raise CodecError(f"{kind.value} payload is {len(data)} bytes, not whole 32-bit words")
    stream = _registry.constriction().stream
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    out = np.empty(sum(counts), np.uint8)
    try:
        if kind is StageKind.ANS:
            decoder = stream.stack.AnsCoder(words)
        else:
            decoder = stream.queue.RangeDecoder(words)
        at = 0
        for model, count in zip(models, counts, strict=True):
            if count:
                out[at : at + count] = decoder.decode(model, count)
                at += count
    except Exception as exc:  # constriction raises ValueError/AssertionError on bad words
        raise CodecError(f"{kind.value} payload cannot be decoded: {exc}") from exc
    return out


def empirical_entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    """n * H(empirical distribution of the symbols): the limit for any model fitted to them."""
    counts = np.bincount(symbols.reshape(-1), minlength=alphabet).astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum())


__all__ = [
    "EntropyModel",
    "EntropyParams",
    "channel_axis",
    "channel_groups",
    "decode_symbols",
    "embedded_model",
    "empirical_entropy_bits",
    "encode_symbols",
    "histogram_frequencies",
]
