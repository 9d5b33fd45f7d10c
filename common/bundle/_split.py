"""Cut any ONNX model at an internal tensor into a head and a tail, and check the cut is exact.

A tensor ``T`` is a *candidate cut point* when the graph outputs that depend on it depend on the
graph inputs only through ``T``: the tail then needs nothing but ``T`` (and constants), and the
head computes ``T`` plus every output that does not depend on it (e.g. early-exit logits).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
from onnx import shape_inference

from common.errors import BundleError, InvalidArgument, NotFound

log = logging.getLogger(__name__)

EXACT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class CutCandidate:
    """An internal tensor at which the model can be split."""

    name: str
    """Tensor name."""
    shape: list[int | None]
    """Shape from ONNX shape inference (None for symbolic/unknown dims)."""
    float32_bytes: int | None
    """Bytes per sample as float32 (dims after the first), None when a dim is unknown."""
    head_outputs: list[str]
    """What the head returns: graph outputs computed before the cut, then the cut tensor."""
    tail_outputs: list[str]
    """Graph outputs the tail computes from the cut tensor."""
    depth: int
    """Number of graph nodes on the head side (the cut's position, for ordering)."""


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


def _graph_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _shape(vi: onnx.ValueInfoProto) -> list[int | None]:
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.inputs = _graph_inputs(model)
        self.outputs = [o.name for o in g.output]
        self.constants = {i.name for i in g.initializer}
        self.producer: dict[str, int] = {}
        for idx, node in enumerate(g.node):
            for out in node.output:
                if out:
                    self.producer[out] = idx
            if node.op_type == "Constant":
                self.constants.update(o for o in node.output if o)
        self.nodes = list(g.node)

    def upstream(
        self, targets: Iterable[str], stop: str | None = None
    ) -> tuple[set[int], set[str]]:
        """Nodes and leaf tensors reached walking back from ``targets`` (not through ``stop``)."""
        seen_nodes: set[int] = set()
        leaves: set[str] = set()
        stack = [t for t in targets if t != stop]
        seen_tensors = set(stack)
        while stack:
            t = stack.pop()
            idx = self.producer.get(t)
            if idx is None:
                leaves.add(t)
                continue
            if idx in seen_nodes:
                continue
            seen_nodes.add(idx)
            for inp in self.nodes[idx].input:
                if inp and inp != stop and inp not in seen_tensors:
                    seen_tensors.add(inp)
                    stack.append(inp)
        return seen_nodes, leaves


def candidate_cuts(model: onnx.ModelProto) -> list[CutCandidate]:
    """Every internal tensor at which ``model`` can be split, in graph order.

    Only cuts that leave the main output (the one with the most upstream tensors) on the tail
    side are listed.
    """
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        vi.name: _shape(vi)
        for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    }
    graph = _Graph(model)
    inputs = set(graph.inputs)
    # The main output (the one with the most upstream work, i.e. the final logits) must be on
    # the tail side: cutting inside an early-exit branch is not an edge/cloud split.
    main = max(graph.outputs, key=lambda o: len(_tensors(graph, o)))
    out: list[CutCandidate] = []
    for node in graph.nodes:
        if node.op_type == "Constant":
            continue
        for t in node.output:
            if not t or t in graph.constants:
                continue
            # Outputs that depend on t: those whose upstream (not stopping at t) contains t.
            dependent = [o for o in graph.outputs if o != t and t in _tensors(graph, o)]
            if main not in dependent:
                continue
            _, leaves = graph.upstream(dependent, stop=t)
            if leaves & inputs:
                continue
            head_nodes, _ = graph.upstream([t])
            before = [o for o in graph.outputs if o not in dependent and o != t]
            shape = shapes.get(t, [])
            tail_dims = shape[1:]
            known = [d for d in tail_dims if d is not None]
            nbytes = 4 * int(np.prod(known)) if shape and len(known) == len(tail_dims) else None
            out.append(CutCandidate(t, shape, nbytes, [*before, t], dependent, len(head_nodes)))
    return out


def _tensors(graph: _Graph, output: str) -> set[str]:
    """All tensors upstream of ``output`` (memoised per graph)."""
    cache: dict[str, set[str]] = graph.__dict__.setdefault("_tensor_cache", {})
    if output not in cache:
        nodes, leaves = graph.upstream([output])
        tensors = set(leaves)
        for n in nodes:
            tensors.update(o for o in graph.nodes[n].output if o)
        cache[output] = tensors
    return cache[output]


def find_cut(model: onnx.ModelProto, name: str) -> CutCandidate:
    """The candidate called ``name``; a precise error listing candidates otherwise."""
    cands = candidate_cuts(model)
    for c in cands:
        if c.name == name:
            return c
    names = ", ".join(c.name for c in cands[:20]) + (" ..." if len(cands) > 20 else "")
    known = {t for n in model.graph.node for t in n.output} | set(_graph_inputs(model))
    if name not in known:
        raise NotFound(f"tensor {name!r} is not in the model; candidate cut points: {names}")
    raise InvalidArgument(
        f"tensor {name!r} does not separate the model (some output also depends on the input "
        f"through another path); candidate cut points: {names}"
    )


def extract(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """Sub-model computing ``outputs`` from ``inputs`` (onnx.utils extraction)."""
    # The extractor needs a value_info for every cut tensor: give it a shape-inferred model.
    extractor = onnx.utils.Extractor(shape_inference.infer_shapes(model))
    sub = extractor.extract_model(inputs, outputs)
    # Keep dims symbolic as in the source (the extractor copies value_info from shape inference).
    onnx.checker.check_model(sub)
    return sub


def split_model(model: onnx.ModelProto, cut: str) -> SplitResult:
    """Head (inputs -> earlier outputs + cut) and tail (cut -> dependent outputs)."""
    cand = find_cut(model, cut)
    head = extract(model, _graph_inputs(model), cand.head_outputs)
    tail = extract(model, [cand.name], cand.tail_outputs)
    return SplitResult(cand, head, tail)


def _session(model: onnx.ModelProto, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


_NP_TYPES: dict[int, Any] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.UINT8: np.uint8,
}


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for the graph inputs (dynamic dims: ``batch`` first, 1 elsewhere)."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d if d is not None else (batch if i == 0 else 1) for i, d in enumerate(_shape(vi))]
        dtype = _NP_TYPES.get(vi.type.tensor_type.elem_type)
        if dtype is None:
            raise InvalidArgument(f"input {vi.name!r}: unsupported element type for verification")
        if dtype == np.float32:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
        else:
            feeds[vi.name] = rng.integers(0, 10, dims).astype(dtype)
    return feeds


def verify_split(
    model: onnx.ModelProto,
    result: SplitResult,
    feeds: dict[str, np.ndarray] | None = None,
    tolerance: float = EXACT_TOLERANCE,
) -> float:
    """Run full vs tail(head(x)); return max abs diff, :class:`InvalidArgument` above tolerance."""
    feeds = feeds if feeds is not None else random_inputs(model)
    full_sess = _session(model)
    full_names = [o.name for o in model.graph.output]
    full = dict(zip(full_names, full_sess.run(full_names, feeds), strict=True))
    head_sess = _session(result.head)
    head_out = dict(
        zip(result.cut.head_outputs, head_sess.run(result.cut.head_outputs, feeds), strict=True)
    )
    tail_sess = _session(result.tail)
    tail_out = dict(
        zip(
            result.cut.tail_outputs,
            tail_sess.run(result.cut.tail_outputs, {result.cut.name: head_out[result.cut.name]}),
            strict=True,
        )
    )
    diff = 0.0
    compared = []
    for name, value in [*head_out.items(), *tail_out.items()]:
        if name in full:
            diff = max(diff, float(np.max(np.abs(full[name].astype(np.float64) - value))))
            compared.append(name)
    result.max_abs_diff = diff
    result.compared = compared
    if not diff <= tolerance:
        raise InvalidArgument(
            f"cut {result.cut.name!r}: tail(head(x)) differs from the full model by {diff:.3g} "
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
