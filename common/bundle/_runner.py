"""Run a bundle's segments with onnxruntime on CPU (batching large inputs)."""

from __future__ import annotations

import numpy as np

from common.bundle._bundle import Bundle


def run_exits(
    bundle: Bundle, x: np.ndarray, batch: int = 500, threads: int = 1
) -> list[np.ndarray]:
    """Logits of every exit (exit order) for preprocessed input ``x``, via the edge chain."""
    sessions = {name: bundle.session(name, threads) for name in bundle.manifest.edge_chain}
    specs = {name: bundle.manifest.segment(name) for name in bundle.manifest.edge_chain}
    wanted = [e.logits for e in bundle.exits]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for start in range(0, x.shape[0], batch):
        values: dict[str, np.ndarray] = {bundle.manifest.input.name: x[start : start + batch]}
        for name in bundle.manifest.edge_chain:
            spec = specs[name]
            outs = sessions[name].run(
                [t.name for t in spec.outputs], {t.name: values[t.name] for t in spec.inputs}
            )
            values.update(zip([t.name for t in spec.outputs], outs, strict=True))
        for name in wanted:
            parts[name].append(values[name])
    return [np.concatenate(parts[name]) for name in wanted]


def run_segment(
    bundle: Bundle, segment: str, feeds: dict[str, np.ndarray], threads: int = 1
) -> dict[str, np.ndarray]:
    """All outputs of one segment, by tensor name."""
    spec = bundle.manifest.segment(segment)
    names = [t.name for t in spec.outputs]
    outs = bundle.session(segment, threads).run(names, feeds)
    return dict(zip(names, outs, strict=True))
