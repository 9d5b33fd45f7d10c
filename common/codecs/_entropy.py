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

    probabilities: np.ndarray  # float64, shape (alphabet,), sums to 1
    spec: str = ""  # the codec spec whose symbols it models
    cut: str = ""  # the cut point it was fitted on
    samples: int = 0  # number of symbols counted

    def __post_init__(self) -> None:
        p = self.probabilities
        if p.ndim != 1 or p.size not in (4, 8, 16, 32, 64, 128, 256):
            raise CodecError(f"entropy model alphabet must be 2**bits (2..8 bits), got {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
            raise CodecError("entropy model probabilities must be finite, >= 0, not all zero")

    @property
    def alphabet(self) -> int:
        return int(self.probabilities.size)

    @functools.cached_property
    def model_id(self) -> int:
        """32-bit id (CRC32C of the probability table), written into frames."""
        return int(google_crc32c.value(self.probabilities.astype("<f8").tobytes()))

    @property
    def model_id_hex(self) -> str:
        return f"{self.model_id:08x}"

    @functools.cached_property
    def categorical(self) -> Any:
        """The constriction model (built once, reused by every encode/decode)."""
        return _categorical(self.probabilities)

    def cross_entropy_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``symbols`` under this model, in bits."""
        p = self.probabilities / self.probabilities.sum()
        with np.errstate(divide="ignore"):
            return float(-np.log2(p[symbols.reshape(-1)]).sum())

    @classmethod
    def from_counts(cls, counts: np.ndarray, *, spec: str = "", cut: str = "") -> EntropyModel:
        """Model from symbol counts, with add-half smoothing so unseen symbols stay codable."""
        counts = np.asarray(counts, np.float64)
        probs = (counts + 0.5) / (counts.sum() + 0.5 * counts.size)
        return cls(probs, spec=spec, cut=cut, samples=int(counts.sum()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model_id": self.model_id_hex,
            "spec": self.spec,
            "cut": self.cut,
            "samples": self.samples,
            "probabilities": [float(x) for x in self.probabilities],
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
        except (OSError, ValueError, KeyError, TypeError) as exc:
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


def encode_symbols(kind: StageKind, symbols: np.ndarray, model: Any) -> bytes:
    """Entropy-code flat uint8 symbols; returns little-endian 32-bit words."""
    stream = _registry.constriction().stream
    data = symbols.reshape(-1).astype(np.int32)
    if kind is StageKind.ANS:
        coder = stream.stack.AnsCoder()
        coder.encode_reverse(data, model)
    else:
        coder = stream.queue.RangeEncoder()
        coder.encode(data, model)
    return np.asarray(coder.get_compressed(), "<u4").tobytes()


def decode_symbols(kind: StageKind, data: memoryview, model: Any, count: int) -> np.ndarray:
    """Decode ``count`` symbols; CodecError (never a crash) on malformed words."""
    if len(data) % 4:
        raise CodecError(f"{kind.value} payload is {len(data)} bytes, not whole 32-bit words")
    stream = _registry.constriction().stream
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    try:
        if kind is StageKind.ANS:
            decoder = stream.stack.AnsCoder(words)
        else:
            decoder = stream.queue.RangeDecoder(words)
        out = decoder.decode(model, count) if count else np.zeros(0, np.int32)
    except Exception as exc:  # constriction raises ValueError/AssertionError on bad words
        raise CodecError(f"{kind.value} payload cannot be decoded: {exc}") from exc
    return np.asarray(out).astype(np.uint8)


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
    "decode_symbols",
    "embedded_model",
    "empirical_entropy_bits",
    "encode_symbols",
    "histogram_frequencies",
]
