"""Build a bundle directory from one exported ONNX graph (exits and cut tensors as outputs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from common.bundle._bundle import Bundle, file_entry
from common.bundle._manifest import (
    FORMAT_VERSION,
    CutPointSpec,
    ExitSpec,
    InputSpec,
    Manifest,
    Preprocessing,
    SegmentSpec,
    TensorSpec,
    write_manifest,
)
from common.bundle._split import extract, random_inputs
from common.errors import BundleError

log = logging.getLogger(__name__)


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    dims = vi.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return TensorSpec(name=vi.name, shape=shape)


def build_bundle(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    classes: Sequence[str],
    preprocessing: Preprocessing,
    exits: Sequence[tuple[str, str]],
    cuts: Sequence[str],
    description: str = "",
) -> Bundle:
    """Write segments and manifest for a model whose graph has exit logits and cut tensors.

    ``exits`` is ``[(exit name, logits tensor), ...]`` earliest first, the last being the final
    logits; ``cuts`` are tensor names, one between consecutive exits (``len(exits) - 1`` of
    them). Stage ``i`` maps the previous cut (or the input) to exit ``i``'s logits and cut ``i``;
    ``tail_<cut>`` maps a cut to the final logits; ``full`` maps the input to the final logits.
    Each head/tail pair is checked against the source graph (max abs diff <= 1e-5).
    """
    if len(cuts) != len(exits) - 1:
        raise BundleError(f"{name}: need one cut tensor between consecutive exits")
    model = shape_inference.infer_shapes(onnx.load(str(model_path)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vis = {vi.name: vi for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    input_name = model.graph.input[0].name
    final = exits[-1][1]
    seg_defs: list[tuple[str, list[str], list[str]]] = []
    boundaries = [input_name, *cuts]
    for i, (_, logits) in enumerate(exits):
        outs = [logits] if i == len(cuts) else [logits, cuts[i]]
        seg_defs.append((f"stage{i + 1}" if cuts else "full", [boundaries[i]], outs))
    for cut in cuts:
        seg_defs.append((f"tail_{cut}", [cut], [final]))
    if cuts:
        seg_defs.append(("full", [input_name], [final]))
    segments: list[SegmentSpec] = []
    files = {}
    protos: dict[str, onnx.ModelProto] = {}
    for seg_name, ins, outs in seg_defs:
        sub = extract(model, ins, outs)
        sub.graph.name = f"{name}.{seg_name}"
        protos[seg_name] = sub
        path = out / f"{seg_name}.onnx"
        onnx.save(sub, str(path))
        files[path.name] = file_entry(path)
        segments.append(
            SegmentSpec(
                name=seg_name,
                file=path.name,
                inputs=[_spec(vis[n]) for n in ins],
                outputs=[_spec(vis[n]) for n in outs],
            )
        )
    cut_specs = []
    for i, cut in enumerate(cuts):
        spec = _spec(vis[cut])
        cut_specs.append(
            CutPointSpec(
                name=cut,
                head=[f"stage{j + 1}" for j in range(i + 1)],
                tail=f"tail_{cut}",
                shape=spec.shape,
                float32_bytes=4 * int(np.prod([d or 1 for d in spec.shape[1:]])),
            )
        )
    exit_specs = [
        ExitSpec(
            name=ex_name,
            segment=f"stage{i + 1}" if cuts else "full",
            logits=logits,
            index=i,
            threshold=0.0 if i == len(exits) - 1 else None,
        )
        for i, (ex_name, logits) in enumerate(exits)
    ]
    in_vi = _spec(vis[input_name])
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        description=description,
        classes=list(classes),
        input=InputSpec(name=input_name, shape=in_vi.shape, preprocessing=preprocessing),
        segments=segments,
        full="full",
        edge_chain=[f"stage{i + 1}" for i in range(len(exits))] if cuts else ["full"],
        cut_points=cut_specs,
        exits=exit_specs,
        files=files,
    )
    write_manifest(manifest, out / "manifest.json")
    _check_consistency(model, protos, cuts, final)
    return Bundle(out, manifest)


def _check_consistency(
    model: onnx.ModelProto, protos: dict[str, onnx.ModelProto], cuts: Sequence[str], final: str
) -> None:
    import onnxruntime as ort

    def run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in s.get_outputs()]
        return dict(zip(names, s.run(names, feeds), strict=True))

    feeds = random_inputs(model, batch=4)
    ref = run(model, feeds)
    values = dict(feeds)
    for i in range(len(cuts) + 1):
        seg = protos[f"stage{i + 1}"] if cuts else protos["full"]
        values.update(run(seg, {k: values[k] for k in [seg.graph.input[0].name]}))
    checks = [("edge chain", values[final])]
    checks.append(("full", run(protos["full"], feeds)[final]))
    for cut in cuts:
        checks.append((f"tail_{cut}", run(protos[f"tail_{cut}"], {cut: values[cut]})[final]))
    for label, got in checks:
        diff = float(np.max(np.abs(got - ref[final])))
        log.info("consistency %s: max abs diff %.3g", label, diff)
        if diff > 1e-5:
            raise BundleError(f"segment {label}: differs from the source graph by {diff:.3g}")
