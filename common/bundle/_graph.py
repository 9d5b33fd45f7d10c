"""Producer/consumer view of an ONNX graph and the cut candidates it yields."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

__all__ = ["CutCandidate", "Graph", "graph_inputs"]


@dataclass(frozen=True)
class CutCandidate:
    """Internal tensor(s) at which the model can be split."""

    name: str
    """Tensor name; for a multi-tensor cut the names joined by commas."""
    shape: list[int | None]
    """Shape from ONNX shape inference (None for symbolic/unknown dims); the first tensor's."""
    float32_bytes: int | None
    """Bytes per sample as float32 (dims after the first, all tensors), None when unknown."""
    head_outputs: list[str]
    """What the head returns: graph outputs computed before the cut, then the cut tensors."""
    tail_outputs: list[str]
    """Graph outputs the tail computes from the cut tensors."""
    depth: int
    """Number of graph nodes on the head side (the cut's position, for ordering)."""
    tensors: tuple[str, ...] = ()
    """The cut tensors (one for a single-tensor cut)."""
    concrete: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Exact shape of each cut tensor on the real input (batch included), when one was given."""
    dtypes: dict[str, str] = field(default_factory=dict)
    """Element type of each cut tensor on the real input."""

    def __post_init__(self) -> None:
        if not self.tensors:
            object.__setattr__(self, "tensors", tuple(self.name.split(",")))

    @property
    def bytes(self) -> int | None:
        """Bytes of the cut tensors at their real dtype and shape (batch included), if known."""
        if not self.concrete:
            return None
        return sum(
            int(np.prod(s)) * np.dtype(self.dtypes.get(t, "float32")).itemsize
            for t, s in self.concrete.items()
        )


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the graph inputs that are not initializers."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


class Graph:
    """Producer/consumer view of a model's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.inputs = graph_inputs(model)
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
        self._tensor_cache: dict[str, set[str]] = {}

    def upstream(
        self, targets: Iterable[str], stop: Iterable[str] = ()
    ) -> tuple[set[int], set[str]]:
        """Nodes and leaf tensors reached walking back from ``targets`` (not through ``stop``)."""
        stops = set(stop)
        seen_nodes: set[int] = set()
        leaves: set[str] = set()
        stack = [t for t in targets if t not in stops]
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
                if inp and inp not in stops and inp not in seen_tensors:
                    seen_tensors.add(inp)
                    stack.append(inp)
        return seen_nodes, leaves

    def tensors(self, output: str) -> set[str]:
        """All tensors upstream of ``output`` (memoised)."""
        if output not in self._tensor_cache:
            nodes, leaves = self.upstream([output])
            found = set(leaves)
            for n in nodes:
                found.update(o for o in self.nodes[n].output if o)
            self._tensor_cache[output] = found
        return self._tensor_cache[output]

    @property
    def main_output(self) -> str:
        """The output with the most upstream work (the final logits): it must be on the tail."""
        return max(self.outputs, key=lambda o: len(self.tensors(o)))

    def cut(self, tensors: Sequence[str]) -> CutCandidate | None:
        """The candidate cutting at ``tensors``, or None when they do not separate the graph."""
        cut = set(tensors)
        dependent = [
            o for o in self.outputs if o not in cut and any(t in self.tensors(o) for t in cut)
        ]
        if self.main_output not in dependent:
            return None
        _, leaves = self.upstream(dependent, stop=cut)
        if leaves & set(self.inputs):
            return None
        head_nodes, _ = self.upstream(tensors)
        before = [o for o in self.outputs if o not in dependent and o not in cut]
        return CutCandidate(
            ",".join(tensors), [], None, [*before, *tensors], dependent, len(head_nodes),
            tuple(tensors),
        )  # fmt: skip
