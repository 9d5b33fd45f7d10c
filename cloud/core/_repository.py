"""The model repository: which model versions the gateway serves, built from a models directory.

Each bundle (a subdirectory with ``manifest.json``) is served as its full model under the bundle
name, and as one tail model per cut point under ``<bundle>.<cut point>``; a bare ``*.onnx`` file
is served under its stem with version ``1``; a Triton model directory (``config.pbtxt`` and
integer version directories, ``cloud.core._triton_repo``) is served under its name with its
version directories as versions; a pipeline directory (``pipeline.json``,
``cloud.core._pipeline_model``) is served under its name, version ``1``. Versions are the manifest's version string or Triton's version
number; an empty requested version selects the newest loaded one. Anything else in the directory,
and every entry that fails to load, is logged naming the file: nothing is skipped silently.

The repository is also where models are scoped to tenants (``authz.models``, :attr:`scopes`):
every lookup is made as the principal of the request being served, and a model outside its
scope is, for that principal, a model that does not exist — not listed, and NOT_FOUND with the
same words as an unknown name — so inference, the registry, rollouts, statistics and repository
control all see the same models. Each such refusal is reported (``cloud.core.refused``) for the
audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from cloud.core._pipeline_model import is_pipeline_model, spec_from_pipeline
from cloud.core._principal import current_principal, refused_model
from cloud.core._triton_repo import is_triton_model, load_triton_model
from cloud.core._types import ModelKey, ModelSpec, TensorSpec
from common.errors import NotFound

log = logging.getLogger(__name__)

TAIL_SEPARATOR = "."


def tail_model_name(bundle: str, cut_point: str) -> str:
    """Served name of the tail that runs from ``cut_point`` of ``bundle``."""
    return f"{bundle}{TAIL_SEPARATOR}{cut_point}"


def _spec(t: object) -> TensorSpec:
    shape = tuple(-1 if d is None else int(d) for d in t.shape)  # type: ignore[attr-defined]
    return TensorSpec(t.name, t.dtype, shape)  # type: ignore[attr-defined]


def specs_from_bundle(root: Path, max_batch_size: int) -> list[ModelSpec]:
    """Model specs of one bundle directory: its full model and one tail per cut point."""
    from common.bundle import load_bundle

    bundle = load_bundle(root)
    m = bundle.manifest
    labels = tuple(m.classes)
    temperature = m.exits[-1].temperature
    specs = []
    full = m.segment(m.full)
    specs.append(
        ModelSpec(
            name=m.name,
            version=m.version,
            onnx_path=bundle.segment_path(full.name),
            inputs=tuple(_spec(t) for t in full.inputs),
            outputs=tuple(_spec(t) for t in full.outputs),
            max_batch_size=max_batch_size,
            bundle=m.name,
            segment=full.name,
            labels=labels,
            temperature=temperature,
        )
    )
    for cut in m.cut_points:
        tail = m.segment(cut.tail)
        specs.append(
            ModelSpec(
                name=tail_model_name(m.name, cut.name),
                version=m.version,
                onnx_path=bundle.segment_path(tail.name),
                inputs=tuple(_spec(t) for t in tail.inputs),
                outputs=tuple(_spec(t) for t in tail.outputs),
                max_batch_size=max_batch_size,
                bundle=m.name,
                cut_point=cut.name,
                segment=tail.name,
                labels=labels,
                temperature=temperature,
                entropy_model=(
                    bundle.file_path(cut.codec.entropy_model)
                    if cut.codec is not None and cut.codec.entropy_model
                    else None
                ),
            )
        )
    return specs


def spec_from_onnx(
    path: str | Path, max_batch_size: int = 64, version: str = "1", *, name: str | None = None
) -> ModelSpec:
    """Model spec of a bare ONNX file (inputs and outputs read from its graph, initializers
    excluded; the first dimension is the batch); served as ``name`` (default: the file stem)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def conv(vi: onnx.ValueInfoProto) -> TensorSpec:
        tt = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        return TensorSpec(vi.name, dtype, dims)

    path = Path(path)
    return ModelSpec(
        name=name or path.stem,
        version=version,
        onnx_path=path,
        inputs=tuple(conv(v) for v in graph.input if v.name not in inits),
        outputs=tuple(conv(v) for v in graph.output),
        max_batch_size=max_batch_size,
        segment="full",
    )


def scan_models_dir(models_dir: Path, max_batch_size: int) -> list[ModelSpec]:
    """Every servable model in ``models_dir``; a broken entry is logged as an error naming it and
    skipped, an entry that is no model at all is logged as a warning."""
    specs: list[ModelSpec] = []
    if not models_dir.is_dir():
        log.warning("models directory %s does not exist; serving no models", models_dir)
        return specs
    for entry in sorted(models_dir.iterdir()):
        try:
            if entry.is_dir() and (entry / "manifest.json").is_file():
                specs.extend(specs_from_bundle(entry, max_batch_size))
            elif is_pipeline_model(entry):
                specs.append(spec_from_pipeline(entry))
            elif is_triton_model(entry):
                specs.extend(load_triton_model(entry, max_batch_size))
            elif entry.suffix == ".onnx" and entry.is_file():
                specs.append(spec_from_onnx(entry, max_batch_size))
            elif entry.is_file():
                log.info("not a model, not served: %s", entry)
            elif not entry.name.startswith("."):
                log.warning(
                    "ignoring %s: not a bundle (no manifest.json), a pipeline (no pipeline.json), "
                    "a Triton model (no %s and no integer version directory) or an .onnx file",
                    entry,
                    "config.pbtxt",
                )
        except Exception as exc:  # one broken entry must not stop the others
            log.error("cannot serve %s: %s", entry, exc)
    return specs


class ModelRepository:
    """Served model versions by name; resolves requested (name, version) pairs, showing each
    principal only the models in its scope (:attr:`scopes`)."""

    def __init__(
        self, specs: Iterable[ModelSpec] = (), scopes: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        self._by_name: dict[str, dict[str, ModelSpec]] = {}
        self.scopes: dict[str, frozenset[str]] = dict(scopes or {})
        """The scopes each model is served to (``authz.models``; see
        :meth:`cloud.core.Principal.may_use_model`); a model not listed is served to everyone,
        a tail model not listed has its bundle's scopes."""
        for spec in specs:
            self.add(spec)

    def visible_spec(self, spec: ModelSpec) -> bool:
        """True when the current principal may see (and use) ``spec``."""
        name = spec.name
        if name not in self.scopes and spec.bundle:
            name = spec.bundle  # a tail is its bundle's
        return current_principal().may_use_model(name, self.scopes)

    def visible(self, name: str) -> bool:
        """True when the current principal may see model ``name`` (served or not)."""
        versions = self._by_name.get(name)
        if versions:
            return self.visible_spec(next(iter(versions.values())))
        return current_principal().may_use_model(name, self.scopes)

    def check_visible(self, spec: ModelSpec) -> None:
        """NotFound, worded as for an unknown model, unless the current principal may see
        ``spec`` (the refusal is reported for the audit trail)."""
        if not self.visible_spec(spec):
            self._hidden(spec.name)

    def _hidden(self, name: str) -> NoReturn:
        refused_model(name)
        self._unknown(name)

    def _unknown(self, name: str) -> NoReturn:
        known = ", ".join(self.names()) or "none"
        raise NotFound(f"unknown model {name!r} (served models: {known})")

    def add(self, spec: ModelSpec) -> None:
        """Serve ``spec`` (replacing a spec with the same key)."""
        self._by_name.setdefault(spec.name, {})[spec.version] = spec

    def remove(self, key: ModelKey) -> None:
        """Stop serving ``key``."""
        versions = self._by_name.get(key.name, {})
        versions.pop(key.version, None)
        if not versions:
            self._by_name.pop(key.name, None)

    def resolve(self, name: str, version: str = "") -> ModelSpec:
        """The spec for ``name`` at ``version`` (newest when empty); NotFound otherwise."""
        versions = self._by_name.get(name)
        if not versions:
            self._unknown(name)
        if not self.visible_spec(next(iter(versions.values()))):
            self._hidden(name)
        if not version:
            return versions[max(versions, key=_version_key)]
        spec = versions.get(version)
        if spec is None:
            raise NotFound(
                f"model {name!r} has no version {version!r} (versions: {', '.join(sorted(versions))})"
            )
        return spec

    def resolve_cut(self, bundle: str, version: str, cut_point: str) -> ModelSpec:
        """The tail model of ``bundle`` for ``cut_point`` (the full model when it is empty)."""
        if not cut_point or bundle not in self._by_name or not self.visible(bundle):
            return self.resolve(bundle, version)  # NotFound naming the model, unless served
        name = tail_model_name(bundle, cut_point)
        if name not in self._by_name:
            cuts = sorted(
                n.split(TAIL_SEPARATOR, 1)[1]
                for n in self.names()
                if n.startswith(bundle + TAIL_SEPARATOR)
            )
            raise NotFound(
                f"model {bundle!r} has no cut point {cut_point!r} (cut points: {', '.join(cuts) or 'none'})"
            )
        return self.resolve(name, version)

    def names(self) -> list[str]:
        """The names of the models the current principal may see, sorted."""
        return [n for n in sorted(self._by_name) if self.visible(n)]

    def specs(self) -> list[ModelSpec]:
        """Every served spec the current principal may see, by name then version."""
        return [s for n in self.names() for _, s in sorted(self._by_name[n].items())]

    def versions(self, name: str) -> list[str]:
        """Served versions of ``name`` (NotFound when none)."""
        self.resolve(name)
        return sorted(self._by_name[name], key=_version_key)


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in v.replace("-", ".").split("."))


__all__ = [
    "ModelRepository",
    "scan_models_dir",
    "spec_from_onnx",
    "specs_from_bundle",
    "tail_model_name",
]
