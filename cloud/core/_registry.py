"""What the registry reports: served models, versions, cut points and exits.

Built from the core's :class:`ModelRepository`; a bundle-backed model adds its manifest's cut
points (with activation sizes) and exits. Tail models (``<bundle>.<cut>``) are listed as models
of their own, like the inference service serves them. A model's default version is the stable
version of its rollout when one is set, else its newest version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud.core._repository import ModelRepository
from cloud.core._rollout import RolloutManager
from cloud.core._types import ModelSpec, TensorSpec
from common.errors import InvalidArgument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutPointInfo:
    """A cut point of a bundle-backed version (``shape`` without the batch dimension)."""

    name: str
    index: int
    shape: tuple[int, ...]
    activation_bytes_float32: int
    default_codec: str = ""


@dataclass(frozen=True)
class ExitInfo:
    """An exit of a bundle-backed version."""

    name: str
    index: int
    logits_tensor: str
    temperature: float
    threshold: float


@dataclass(frozen=True)
class VersionInfo:
    """One served version: readiness, tensors, cut points, exits, manifest digest."""

    version: str
    ready: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cut_points: tuple[CutPointInfo, ...] = ()
    exits: tuple[ExitInfo, ...] = ()
    manifest_sha256: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """One model with every served version."""

    name: str
    default_version: str
    versions: tuple[VersionInfo, ...] = field(default=())


def _bundle_details(spec: ModelSpec) -> tuple[tuple[CutPointInfo, ...], tuple[ExitInfo, ...], str]:
    if not spec.bundle:
        return (), (), ""
    root = Path(spec.onnx_path).parent
    try:
        from common.bundle import load_bundle

        bundle = load_bundle(root, verify=False)
    except Exception as exc:  # registry answers must not fail on one unreadable manifest
        log.warning("cannot read bundle manifest of %s: %s", spec.key, exc)
        return (), (), ""
    m = bundle.manifest
    cuts = tuple(
        CutPointInfo(
            name=c.name,
            index=i,
            shape=tuple(-1 if d is None else int(d) for d in c.shape[1:]),
            activation_bytes_float32=int(c.float32_bytes),
            default_codec=c.codec.default if c.codec else "",
        )
        for i, c in enumerate(m.cut_points)
        if not spec.cut_point or c.name == spec.cut_point
    )
    exits = tuple(
        ExitInfo(e.name, e.index, e.logits, float(e.temperature), float(e.threshold or 0.0))
        for e in m.exits
    )
    sha = hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()
    return cuts, exits, sha


class RegistryView:
    """Answers ListModels/GetModel from a repository. ``is_ready(name, version)`` reports
    readiness (all ready when None); ``rollouts`` supplies each model's stable version."""

    def __init__(
        self,
        repository: ModelRepository,
        is_ready: Callable[[str, str], bool] | None = None,
        max_page_size: int = 100,
        *,
        rollouts: RolloutManager | None = None,
    ) -> None:
        self._repo = repository
        self._is_ready = is_ready
        self._max_page = max_page_size
        self._rollouts = rollouts

    def _names(self) -> list[str]:
        return sorted({s.name for s in self._repo.specs()})

    def get(self, name: str) -> ModelInfo:
        """One model with every served version (NotFound naming the served models)."""
        if not name:
            raise InvalidArgument("name is required")
        versions = self._repo.versions(name)  # NotFound when unknown
        infos = []
        for v in versions:
            spec = self._repo.resolve(name, v)
            cuts, exits, sha = _bundle_details(spec)
            ready = self._is_ready(name, v) if self._is_ready is not None else True
            infos.append(VersionInfo(v, ready, spec.inputs, spec.outputs, cuts, exits, sha))
        stable = self._rollouts.stable_version(name) if self._rollouts is not None else ""
        default = stable or versions[-1]
        return ModelInfo(name, default, tuple(infos))

    def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[ModelInfo], str]:
        """A page of models by name; the token is the last name of the previous page."""
        if page_size < 0:
            raise InvalidArgument("page_size must be >= 0")
        size = min(page_size or self._max_page, self._max_page)
        names = [n for n in self._names() if n > page_token] if page_token else self._names()
        page = names[:size]
        nxt = page[-1] if len(names) > size else ""
        return [self.get(n) for n in page], nxt


__all__ = ["CutPointInfo", "ExitInfo", "ModelInfo", "RegistryView", "VersionInfo"]
