"""Multi-tensor cuts: sets of tensors that together separate the graph.

A detector with skip connections (an FPN's lateral outputs, a U-Net's encoder features, a YOLO
neck) has no single internal tensor between its stem and its last merge that every path crosses,
but after any node in topological order the tensors that are already computed and still needed
(the *frontier*) always separate it. :func:`frontier_cuts` walks the node order and keeps the
distinct frontiers of 2..``max_tensors`` data tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from common.bundle._graph import CutCandidate, Graph
from common.bundle._split import attach_shapes

__all__ = ["frontier_cuts"]


def _depends_on_input(graph: Graph) -> set[str]:
    """Tensors computed from a graph input (not from constants alone)."""
    live = set(graph.inputs)
    for node in graph.nodes:
        if any(i in live for i in node.input if i):
            live.update(o for o in node.output if o)
    return live


def frontier_cuts(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray] | None = None,
    max_tensors: int = 4,
) -> list[CutCandidate]:
    """Cuts of 2..``max_tensors`` tensors found along the topological order, earliest first.

    Shape-only tensors (those computed through a ``Shape`` node) are left out of the frontier
    and so must not be needed by the tail: such cuts are skipped. With ``feeds`` each cut carries
    its concrete shapes and bytes.
    """
    graph = Graph(model)
    live = _depends_on_input(graph)
    shape_only = _shape_tensors(graph)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(graph.nodes):
        for i in node.input:
            if i:
                last_use[i] = idx
    for out in graph.outputs:
        last_use[out] = len(graph.nodes)
    seen: set[tuple[str, ...]] = set()
    # Consecutive frontiers that keep the same long-lived tensors (skip connections) and differ
    # only in the tensor running through the current block form one group; the last of each
    # group (the block's output) represents it.
    groups: dict[frozenset[str], CutCandidate] = {}
    produced: list[str] = []
    for idx, node in enumerate(graph.nodes):
        new = [o for o in node.output if o in live]
        produced.extend(new)
        frontier = tuple(
            t for t in produced if last_use.get(t, -1) > idx and t not in graph.outputs
        )
        data = tuple(t for t in frontier if t not in shape_only)
        if not 2 <= len(data) <= max_tensors or data in seen:
            continue
        seen.add(data)
        cand = graph.cut(list(data))
        if cand is not None:
            key = frozenset(t for t in data if t not in new)
            groups.pop(key, None)  # re-insert: keeps dict order = order of the group's last cut
            groups[key] = cand
    return attach_shapes(model, list(groups.values()), feeds)


def _shape_tensors(graph: Graph) -> set[str]:
    """Tensors on shape-computation paths (downstream of a Shape node, before data ops use them)."""
    shape_ops = {"Shape", "Size"}
    small = {"Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Mul", "Add", "Sub",
             "Div", "Floor", "Ceil", "Reshape", "ConstantOfShape", "Range", "Equal", "Where"}  # fmt: skip
    out: set[str] = set()
    for node in graph.nodes:
        ins = [i for i in node.input if i]
        if node.op_type in shape_ops or (
            node.op_type in small
            and ins
            and all(i in out or i in graph.constants or i not in graph.producer for i in ins)
            and any(i in out for i in ins)
        ):
            out.update(o for o in node.output if o)
    return out
