"""Cut any ONNX model at internal tensors into a head and a tail, and check the cut is exact.

A set of tensors ``S`` (usually one tensor) is a *cut* when the graph outputs that depend on it
depend on the graph inputs only through ``S``: the tail then needs nothing but ``S`` (and
constants), and the head computes ``S`` plus every output that does not depend on it (e.g.
early-exit logits). With a real input (or explicit dimensions) the cut tensors get their
concrete shapes, and verification compares ``tail(head(x))`` with the full model on that input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from onnx import shape_inference

from common.bundle._graph import CutCandidate, Graph, graph_inputs
from common.bundle._shapes import make_feeds, run_session, session, tensor_shapes
from common.errors import BundleError, NotFound

__all__ = [
    "EXACT_TOLERANCE",
    "CutCandidate",
    "Graph",
    "SplitResult",
    "attach_shapes",
    "candidate_cuts",
    "extract",
    "find_cut",
    "load_model",
    "random_inputs",
    "split_model",
    "verify_split",
    "write_split",
]

log = logging.getLogger(__name__)

EXACT_TOLERANCE = 1e-5


@dataclass
class SplitResult:
    """Head and tail models of one cut, with the verification result."""

    cut: CutCandidate
    head: onnx.ModelProto
    tail: onnx.ModelProto
    max_abs_diff: float | None = None
    compared: list[str] = field(default_factory=list)


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file; :class:`BundleError` naming the file when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: ONNX model not found")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BundleError(f"{p}: not a readable ONNX model: {exc}") from None


def _shape(vi: onnx.ValueInfoProto) -> list[int | None]:
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:  # inference is advisory: a model it cannot follow still splits
        log.warning("shape inference failed (%s); shapes come from the real input only", exc)
        return {}
    return {
        vi.name: _shape(vi)
        for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
        if vi.type.tensor_type.HasField("shape")
    }


def _with_shapes(
    cand: CutCandidate,
    inferred: Mapping[str, list[int | None]],
    real: Mapping[str, tuple[tuple[int, ...], np.dtype]] | None,
) -> CutCandidate:
    shape = list(inferred.get(cand.tensors[0], []))
    concrete = {t: real[t][0] for t in cand.tensors} if real else {}
    dtypes = {t: str(real[t][1]) for t in cand.tensors} if real else {}
    per_sample: list[int | None] = []
    for t in cand.tensors:
        dims: Sequence[int | None] = concrete.get(t) or inferred.get(t) or []
        if t in concrete and not dims:
            per_sample.append(4)  # a scalar
        elif dims and all(d is not None for d in dims[1:]):
            per_sample.append(4 * int(np.prod([d for d in dims[1:] if d is not None])))
        else:
            per_sample.append(None)
    nbytes = None if None in per_sample or not per_sample else sum(p or 0 for p in per_sample)
    return replace(cand, shape=shape, float32_bytes=nbytes, concrete=concrete, dtypes=dtypes)


def candidate_cuts(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None
) -> list[CutCandidate]:
    """Every internal tensor at which ``model`` can be split, in graph order.

    Only cuts that leave the main output (the one with the most upstream tensors) on the tail
    side are listed. With ``feeds`` (a real input) every candidate carries its concrete shape and
    bytes, and tensors that turn out not to carry data (empty) are dropped.
    """
    graph = Graph(model)
    found: list[CutCandidate] = []
    for node in graph.nodes:
        if node.op_type == "Constant":
            continue
        for t in node.output:
            if t and t not in graph.constants and (c := graph.cut([t])) is not None:
                found.append(c)
    return attach_shapes(model, found, feeds)


def attach_shapes(
    model: onnx.ModelProto,
    cands: list[CutCandidate],
    feeds: Mapping[str, np.ndarray] | None,
) -> list[CutCandidate]:
    """Candidates with inferred shapes and, given ``feeds``, concrete shapes and bytes."""
    inferred = _inferred_shapes(model)
    real = None
    if feeds is not None:
        real = tensor_shapes(model, feeds, [t for c in cands for t in c.tensors])
    out = [_with_shapes(c, inferred, real) for c in cands]
    if real is not None:
        out = [c for c in out if all(np.prod(s) > 0 for s in c.concrete.values())]
    return out


def find_cut(model: onnx.ModelProto, name: str | Sequence[str]) -> CutCandidate:
    """The cut at tensor ``name`` (or the tensor set); a precise error naming the tensor otherwise."""
    tensors = [t.strip() for t in name.split(",")] if isinstance(name, str) else list(name)
    graph = Graph(model)
    known = set(graph.producer) | set(graph.inputs)
    for t in tensors:
        if t not in known:
            cands = candidate_cuts(model)
            names = ", ".join(c.name for c in cands[:20]) + (" ..." if len(cands) > 20 else "")
            raise NotFound(f"tensor {t!r} is not in the model; candidate cut points: {names}")
        if t in graph.inputs or t in graph.constants:
            raise BundleError(f"tensor {t!r} is a graph input or a constant, not a cut point")
    cand = graph.cut(tensors)
    if cand is None:
        what = (
            f"tensor {tensors[0]!r} does"
            if len(tensors) == 1
            else f"tensors {','.join(tensors)!r} do"
        )
        names = ", ".join(c.name for c in candidate_cuts(model)[:20])
        raise BundleError(
            f"{what} not separate the model (some output also depends on the input "
            f"through another path); candidate cut points: {names}"
        )
    return cand


def extract(
    model: onnx.ModelProto,
    inputs: list[str],
    outputs: list[str],
    ranks: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """Sub-model computing ``outputs`` from ``inputs`` (onnx.utils extraction).

    The extractor needs a typed, shaped value_info for every boundary tensor; where shape
    inference lost one (PaddlePaddle exports), a shape of ``ranks[t]`` symbolic dims is supplied.
    """
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # advisory, as above
        inferred = model
    infos = {vi.name: vi for vi in inferred.graph.value_info}
    for t in [*inputs, *outputs]:
        vi = infos.get(t)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            continue
        if ranks is None or t not in ranks:
            continue
        elem = vi.type.tensor_type.elem_type if vi is not None else onnx.TensorProto.FLOAT
        dims = [f"{t}_d{i}" for i in range(ranks[t])]
        if vi is not None:
            inferred.graph.value_info.remove(vi)
        inferred.graph.value_info.append(onnx.helper.make_tensor_value_info(t, elem, dims))
    try:
        sub = onnx.utils.Extractor(inferred).extract_model(inputs, outputs)
        onnx.checker.check_model(sub)
    except Exception as exc:  # onnx raises ValidationError, KeyError, ...
        raise BundleError(
            f"cannot extract {','.join(inputs)} -> {','.join(outputs)}: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        ) from None
    return sub


def split_model(
    model: onnx.ModelProto,
    cut: str | Sequence[str] | CutCandidate,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> SplitResult:
    """Head (inputs -> earlier outputs + cut tensors) and tail (cut tensors -> dependent outputs).

    ``feeds`` (a real input) give the cut tensors their concrete shapes; without them the
    tensors' ranks come from shape inference or, failing that, one run on random input.
    """
    cand = cut if isinstance(cut, CutCandidate) else find_cut(model, cut)
    if not cand.concrete:
        inferred = _inferred_shapes(model)
        if feeds is None and any(not inferred.get(t) for t in cand.tensors):
            feeds = make_feeds(model)
        cand = attach_shapes(model, [cand], feeds)[0] if feeds is not None else cand
        if feeds is not None and not cand.concrete:
            raise BundleError(f"cut {cand.name!r}: the tensor is empty on this input")
    ranks = {t: len(s) for t, s in cand.concrete.items()}
    try:
        head = extract(model, graph_inputs(model), cand.head_outputs, ranks)
        tail = extract(model, list(cand.tensors), cand.tail_outputs, ranks)
    except BundleError as exc:
        raise BundleError(f"cut {cand.name!r}: {exc.message}") from None
    return SplitResult(cand, head, tail)


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for the graph inputs (dynamic dims: ``batch`` first, 1 elsewhere)."""
    return make_feeds(model, batch=batch, seed=seed)


def verify_split(
    model: onnx.ModelProto,
    result: SplitResult,
    feeds: Mapping[str, np.ndarray] | None = None,
    tolerance: float = EXACT_TOLERANCE,
) -> float:
    """Run full vs tail(head(x)); return max abs diff, :class:`BundleError` above tolerance.

    All three run without graph optimizations: fusions across the cut would otherwise round
    differently on each side (about 1e-5 on PP-OCR's detector) and hide what the split changed.
    """
    feeds = feeds if feeds is not None else random_inputs(model)
    name = result.cut.name
    full_names = [o.name for o in model.graph.output]
    full = dict(
        zip(
            full_names,
            run_session(session(model, optimize=False), full_names, feeds, "full model"),
            strict=True,
        )
    )
    head_names = result.cut.head_outputs
    head_vals = run_session(
        session(result.head, optimize=False), head_names, feeds, f"cut {name!r}: head"
    )
    head_out = dict(zip(head_names, head_vals, strict=True))
    tail_in = {t: head_out[t] for t in result.cut.tensors}
    tail_vals = run_session(
        session(result.tail, optimize=False),
        result.cut.tail_outputs,
        tail_in,
        f"cut {name!r}: tail",
    )
    tail_out = dict(zip(result.cut.tail_outputs, tail_vals, strict=True))
    diff = 0.0
    compared = []
    for out_name, value in [*head_out.items(), *tail_out.items()]:
        if out_name in full:
            ref = full[out_name].astype(np.float64)
            if ref.shape != value.shape:
                raise BundleError(
                    f"cut {name!r}: output {out_name!r} has shape {value.shape} after the split, "
                    f"{ref.shape} in the full model"
                )
            if ref.size:
                diff = max(diff, float(np.max(np.abs(ref - value))))
            compared.append(out_name)
    result.max_abs_diff = diff
    result.compared = compared
    if not diff <= tolerance:
        raise BundleError(
            f"cut {name!r}: tail(head(x)) differs from the full model by {diff:.3g} "
            f"(tolerance {tolerance:g})"
        )
    return diff


def write_split(result: SplitResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Save ``head.onnx`` and ``tail.onnx`` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    head, tail = d / "head.onnx", d / "tail.onnx"
    onnx.save(result.head, str(head))
    onnx.save(result.tail, str(tail))
    return head, tail
