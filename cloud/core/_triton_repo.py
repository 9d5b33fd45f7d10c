"""Triton model repositories: ``<models>/<name>/config.pbtxt`` + ``<name>/<version>/model.onnx``.

A directory of the models directory is a Triton model when it holds ``config.pbtxt`` or a version
directory (a positive integer name without a leading zero, as Triton reads them). Its
``config.pbtxt`` is parsed with protobuf's text format into Triton's ``ModelConfig`` (the part of
it in ``proto/inference/model_config.proto``) and checked against each version's ONNX graph the
way Triton's onnxruntime backend checks it; a missing ``config.pbtxt`` is completed from the graph
(Triton's auto-complete). Every version the ``version_policy`` selects (default: the newest one)
becomes one :class:`ModelSpec` whose version is the directory name, so ``model_version="1"``
resolves as it does on Triton, and whose ``model_config`` is the completed configuration that
``ModelConfig`` reports.

What cannot be served (another backend, ``max_batch_size: 0``, a ``reshape``, tensors that do not
match the graph, a version directory without its model file...) raises :class:`BundleError`
naming the file and the reason; fields the gateway does not interpret are logged once per file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from google.protobuf import text_format
from inference import model_config_pb2 as mc

from cloud.core._types import ModelSpec, TensorSpec
from common import dtypes
from common.errors import BundleError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
_UNSERVABLE_SECTIONS = ("sequence_batching", "ensemble_scheduling")


def is_triton_model(entry: Path) -> bool:
    """True when ``entry`` is laid out as a Triton model (``config.pbtxt`` or a version dir)."""
    if not entry.is_dir():
        return False
    if (entry / CONFIG_FILE).is_file():
        return True
    return any(p.is_dir() and _VERSION_DIR.fullmatch(p.name) for p in entry.iterdir())


_TOKEN = re.compile(
    r"""\s+|#[^\n]*|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[{}\[\]<>:,;]|[^\s{}\[\]<>:,;#"']+"""
)
_OPEN = {"{": "}", "[": "]", "<": ">"}


def _top_level_fields(text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each top-level field of a text-format message: ``name [:] value``
    where the value is one scalar token or a bracketed group (``{}``, ``[]``, ``<>``)."""
    tokens = [
        (m.group(), m.start(), m.end())
        for m in _TOKEN.finditer(text)
        if not m.group().isspace() and not m.group().startswith("#")
    ]
    fields: list[tuple[str, int, int]] = []
    i = 0
    while i < len(tokens):
        name, start, _ = tokens[i]
        i += 1
        if i < len(tokens) and tokens[i][0] == ":":
            i += 1
        if i >= len(tokens):
            break
        if tokens[i][0] in _OPEN:
            depth = 0
            while i < len(tokens):
                tok = tokens[i][0]
                depth += tok in _OPEN
                depth -= tok in _OPEN.values()
                i += 1
                if depth == 0:
                    break
        else:
            i += 2 if tokens[i][0] == "-" else 1
        fields.append((name, start, tokens[i - 1][2]))
        while i < len(tokens) and tokens[i][0] in ",;":
            i += 1
    return fields


def parse_config(path: Path) -> mc.ModelConfig:
    """``config.pbtxt`` as a ``ModelConfig``; BundleError naming the file for what Triton would
    refuse or the gateway cannot serve. Fields outside the gateway's part of ModelConfig (e.g.
    ``optimization``, ``model_warmup``) are left out with a warning naming them."""
    text = path.read_text(encoding="utf-8")
    for section in _UNSERVABLE_SECTIONS:
        if re.search(rf"^\s*{section}\b", text, re.MULTILINE):
            raise BundleError(f"{path}: {section} is not supported (stateless models only)")
    known = set(mc.ModelConfig.DESCRIPTOR.fields_by_name)
    ignored = []
    kept = list(text)
    for name, start, end in _top_level_fields(text):
        if name not in known:
            ignored.append(name)
            kept[start:end] = " " * (end - start)
    if ignored:
        log.warning("%s: the gateway does not interpret %s (ignored)", path, ", ".join(ignored))
    cfg = mc.ModelConfig()
    try:
        text_format.Parse("".join(kept), cfg)
    except text_format.ParseError as strict:
        cfg = mc.ModelConfig()
        try:  # unknown fields inside known sections (only the first is named by the parser)
            text_format.Parse("".join(kept), cfg, allow_unknown_field=True)
        except text_format.ParseError as exc:
            raise BundleError(f"{path}: not a valid model configuration: {exc}") from exc
        log.warning("%s: ignoring what the gateway does not interpret (%s)", path, strict)
    return cfg


def _onnx_tensors(path: Path) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    import onnx
    from onnx import helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise BundleError(f"{path}: cannot read the ONNX model: {exc}") from exc
    inits = {i.name for i in graph.initializer}

    def conv(vi: onnx.ValueInfoProto) -> TensorSpec:
        tt = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        return TensorSpec(vi.name, dtype, dims)

    inputs = {v.name: conv(v) for v in graph.input if v.name not in inits}
    outputs = {v.name: conv(v) for v in graph.output}
    return inputs, outputs


def _complete(
    cfg: mc.ModelConfig,
    model: Path,
    config_path: Path,
    default_max_batch_size: int,
    has_config: bool,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Fill what the config leaves out from the graph (as Triton's auto-complete does) and check
    what it declares; returns the served inputs and outputs (batch dimension first, -1)."""
    graph_in, graph_out = _onnx_tensors(model)
    if not has_config and cfg.max_batch_size == 0:
        batched = all(t.shape[:1] == (-1,) for t in (*graph_in.values(), *graph_out.values()))
        if not batched:
            raise BundleError(
                f"{model}: without {CONFIG_FILE} the first dimension of every input and output "
                "must be a dynamic batch dimension; write a config.pbtxt with max_batch_size"
            )
        cfg.max_batch_size = default_max_batch_size
    if cfg.max_batch_size <= 0:
        raise BundleError(
            f"{config_path}: max_batch_size {cfg.max_batch_size} (inputs without a batch "
            "dimension) is not supported; the gateway batches along the first dimension, so set "
            "max_batch_size > 0 for a model whose first dimension is the batch"
        )
    if not cfg.input:
        for t in graph_in.values():
            cfg.input.add(name=t.name, data_type=_config_type(t.dtype), dims=t.shape[1:])
    if not cfg.output:
        for t in graph_out.values():
            cfg.output.add(name=t.name, data_type=_config_type(t.dtype), dims=t.shape[1:])
    declared = {i.name for i in cfg.input}
    if declared != set(graph_in):
        raise BundleError(
            f"{config_path}: inputs {sorted(declared)} do not match the inputs of {model} "
            f"({sorted(graph_in)})"
        )
    inputs = tuple(_served(t, graph_in, "input", config_path, model) for t in cfg.input)
    outputs = tuple(_served(t, graph_out, "output", config_path, model) for t in cfg.output)
    return inputs, outputs


def _config_type(dtype: str) -> int:
    return int(mc.DataType.Value(dtypes.lookup(dtype).triton_config))


def _served(
    t: mc.ModelInput | mc.ModelOutput,
    graph: dict[str, TensorSpec],
    kind: str,
    config_path: Path,
    model: Path,
) -> TensorSpec:
    where = f"{config_path}: {kind} {t.name!r}"
    actual = graph.get(t.name)
    if actual is None:
        raise BundleError(f"{where} is not an {kind} of {model} ({', '.join(sorted(graph))})")
    if t.HasField("reshape"):
        raise BundleError(f"{where}: reshape is not supported")
    want = mc.DataType.Name(t.data_type)
    have = dtypes.lookup(actual.dtype).triton_config
    if want != have:
        raise BundleError(f"{where}: data_type {want} but the model has {have}")
    dims = (-1, *(int(d) for d in t.dims))
    if len(dims) != len(actual.shape) or any(
        d != a and a != -1 and d != -1 for d, a in zip(dims, actual.shape, strict=False)
    ):
        raise BundleError(
            f"{where}: dims {list(t.dims)} (batch first: {list(dims)}) do not match the "
            f"model's shape {list(actual.shape)}"
        )
    if actual.shape[:1] != (-1,):
        raise BundleError(
            f"{where}: max_batch_size > 0 needs a dynamic first (batch) dimension, the model "
            f"has {actual.shape[0]}"
        )
    # A dimension fixed on either side is fixed for the request.
    shape = tuple(a if d == -1 else d for d, a in zip(dims, actual.shape, strict=True))
    return TensorSpec(t.name, actual.dtype, shape)


def _versions(root: Path, cfg: mc.ModelConfig, config_path: Path) -> list[int]:
    found: list[int] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        if _VERSION_DIR.fullmatch(p.name):
            found.append(int(p.name))
        else:
            log.warning(
                "%s: ignoring directory %r (Triton version directories are positive integers "
                "without a leading zero)",
                p,
                p.name,
            )
    found.sort()
    policy = cfg.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = found
    elif choice == "specific":
        missing = sorted(set(policy.specific.versions) - set(found))
        if missing:
            raise BundleError(
                f"{config_path}: version_policy names versions {missing} that have no directory "
                f"in {root} (found {found or 'none'})"
            )
        chosen = sorted(set(int(v) for v in policy.specific.versions))
    else:
        n = policy.latest.num_versions if choice == "latest" else 1
        if n < 1:
            raise BundleError(f"{config_path}: version_policy latest needs num_versions >= 1")
        chosen = found[-n:]
    if not chosen:
        raise BundleError(f"{root}: no version directory (e.g. {root}/1/{DEFAULT_MODEL_FILENAME})")
    return chosen


def specs_from_triton(root: Path, default_max_batch_size: int) -> list[ModelSpec]:
    """Model specs of one Triton model directory, one per version its policy selects."""
    config_path = root / CONFIG_FILE
    has_config = config_path.is_file()
    cfg = parse_config(config_path) if has_config else mc.ModelConfig()
    if cfg.name and cfg.name != root.name:
        raise BundleError(
            f"{config_path}: name {cfg.name!r} differs from its directory name {root.name!r}"
        )
    cfg.name = root.name
    if cfg.platform not in ("", ONNX_PLATFORM) or cfg.backend not in ("", ONNX_BACKEND):
        raise BundleError(
            f"{config_path}: platform {cfg.platform!r} / backend {cfg.backend!r} is not served by "
            f"this gateway (platform {ONNX_PLATFORM!r} or backend {ONNX_BACKEND!r} only)"
        )
    if not cfg.backend:
        cfg.backend = ONNX_BACKEND
    if not cfg.platform:
        cfg.platform = ONNX_PLATFORM
    filename = cfg.default_model_filename or DEFAULT_MODEL_FILENAME
    specs = []
    for version in _versions(root, cfg, config_path):
        model = root / str(version) / filename
        if not model.is_file():
            raise BundleError(f"{model}: model file is missing (version {version} of {root.name})")
        # The first version read completes the config; the others are checked against it.
        inputs, outputs = _complete(cfg, model, config_path, default_max_batch_size, has_config)
        delay_s = (
            cfg.dynamic_batching.max_queue_delay_microseconds / 1e6
            if cfg.HasField("dynamic_batching")
            else 0.0  # no dynamic batching: Triton runs requests as they come
        )
        specs.append(
            ModelSpec(
                name=root.name,
                version=str(version),
                onnx_path=model,
                inputs=inputs,
                outputs=outputs,
                max_batch_size=cfg.max_batch_size,
                segment="full",
                model_config=cfg.SerializeToString(),
                max_queue_delay_s=delay_s,
                width_bucket=_width_bucket(cfg, config_path),
            )
        )
    return specs


WIDTH_BUCKET_PARAMETER = "aiml021.width_bucket"
"""``parameters`` key of a model whose requests may be right-padded along their last input
dimension to batch with others of a similar width (``ModelSpec.width_bucket``)."""


def _width_bucket(cfg: mc.ModelConfig, config_path: Path) -> int:
    if WIDTH_BUCKET_PARAMETER not in cfg.parameters:
        return 0
    text = cfg.parameters[WIDTH_BUCKET_PARAMETER].string_value
    if not text.isdigit() or int(text) < 1:
        raise BundleError(
            f"{config_path}: parameters {WIDTH_BUCKET_PARAMETER!r} must be a positive integer "
            f"(a bucket width), got {text!r}"
        )
    return int(text)


def load_triton_model(root: Path, default_max_batch_size: int) -> list[ModelSpec]:
    """:func:`specs_from_triton`, any failure turned into BundleError naming ``root``."""
    try:
        return specs_from_triton(root, default_max_batch_size)
    except BundleError:
        raise
    except Exception as exc:  # a file the parsers choke on must still name itself
        raise BundleError(f"{root}: cannot load the Triton model: {exc}") from exc


__all__ = [
    "CONFIG_FILE",
    "WIDTH_BUCKET_PARAMETER",
    "is_triton_model",
    "load_triton_model",
    "parse_config",
    "specs_from_triton",
]
