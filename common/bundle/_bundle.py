"""Loading, verifying and updating a model bundle directory."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.bundle._manifest import (
    MANIFEST_NAME,
    CodecSpec,
    CutPointSpec,
    ExitSpec,
    FileEntry,
    Manifest,
    read_manifest,
    write_manifest,
)
from common.errors import BundleError, NotFound

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    """The integrity record (sha256, size) of ``path``."""
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


class Bundle:
    """A verified model bundle: manifest plus segment files on disk.

    Obtain one with :func:`load_bundle`. Updates (:meth:`update_cut_codec`,
    :meth:`update_exits`) rewrite ``manifest.json`` in place with fresh checksums.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    # -- read side ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Bundle name from the manifest."""
        return self.manifest.name

    @property
    def cut_points(self) -> list[CutPointSpec]:
        """Cut points, earliest first."""
        return list(self.manifest.cut_points)

    @property
    def exits(self) -> list[ExitSpec]:
        """Exits ordered by index; the last is the final exit."""
        return list(self.manifest.exits)

    def cut_point(self, name: str) -> CutPointSpec:
        """The cut point called ``name``; :class:`NotFound` listing the known ones otherwise."""
        for cut in self.manifest.cut_points:
            if cut.name == name:
                return cut
        known = ", ".join(c.name for c in self.manifest.cut_points) or "none"
        raise NotFound(f"bundle {self.name}: no cut point {name!r} (known: {known})")

    def segment_path(self, name: str) -> Path:
        """Absolute path of the ONNX file of segment ``name``."""
        return self.root / self.manifest.segment(name).file

    def file_path(self, relative: str) -> Path:
        """Absolute path of a bundle file listed in ``files``."""
        if relative not in self.manifest.files:
            raise BundleError(f"{self.root / MANIFEST_NAME}: {relative!r} is not listed in files")
        return self.root / relative

    def session(self, segment: str, threads: int = 1) -> ort.InferenceSession:
        """An onnxruntime CPU session for ``segment`` using ``threads`` intra-op threads."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(
            str(self.segment_path(segment)), opts, providers=["CPUExecutionProvider"]
        )

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw uint8 images (NHW, or HW for one image) -> float32 NCHW model input."""
        spec = self.manifest.input
        pre = spec.preprocessing
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise BundleError(f"preprocess expects uint8 images, got {arr.dtype}")
        if pre.source_layout == "NHW":
            if arr.ndim == 2:
                arr = arr[None]
            if arr.ndim != 3:
                raise BundleError(f"preprocess expects NHW images, got shape {arr.shape}")
            x = arr[:, None, :, :].astype(np.float32)
        else:
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4:
                raise BundleError(f"preprocess expects NHWC images, got shape {arr.shape}")
            x = arr.transpose(0, 3, 1, 2).astype(np.float32)
        want = [d for d in spec.shape[1:]]
        if list(x.shape[1:]) != want:
            raise BundleError(f"preprocess: image shape {list(x.shape[1:])} != input {want}")
        mean = np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
        return ((x * np.float32(pre.scale) - mean) / std).astype(np.float32)

    def verify(self) -> None:
        """Check every listed file exists with the recorded sha256 (BundleError naming it)."""
        for rel, entry in self.manifest.files.items():
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"{path}: file listed in the manifest is missing")
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise BundleError(
                    f"{path}: sha256 mismatch (manifest {entry.sha256[:12]}..., "
                    f"file {actual[:12]}...)"
                )

    # -- write side --------------------------------------------------------------------------
    def save(self) -> None:
        """Rewrite ``manifest.json`` from :attr:`manifest`."""
        write_manifest(self.manifest, self.root / MANIFEST_NAME)

    def update_cut_codec(
        self, cut: str, default_spec: str, entropy_model_file: str | Path | None = None
    ) -> None:
        """Record the default codec of cut point ``cut`` (and its entropy-model file).

        ``entropy_model_file`` is a path inside the bundle directory (absolute or relative to
        it); its sha256 is added to ``files``. The manifest is rewritten.
        """
        spec = self.cut_point(cut)
        rel: str | None = None
        if entropy_model_file is not None:
            path = Path(entropy_model_file)
            if not path.is_absolute():
                path = self.root / path
            try:
                rel = path.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                raise BundleError(
                    f"{path}: entropy model must live inside the bundle directory {self.root}"
                ) from None
            if not path.is_file():
                raise BundleError(f"{path}: entropy model file not found")
            self.manifest.files[rel] = file_entry(path)
        spec.codec = CodecSpec(default=default_spec, entropy_model=rel)
        self.save()
        log.info("bundle %s: cut %s codec %s (entropy model %s)", self.name, cut, default_spec, rel)

    def update_exits(
        self,
        temperatures: Sequence[float],
        thresholds: Sequence[float | None],
        calibration: dict[str, object] | None = None,
    ) -> None:
        """Write per-exit temperatures and thresholds (in exit order) into the manifest."""
        if len(temperatures) != len(self.manifest.exits) or len(thresholds) != len(
            self.manifest.exits
        ):
            raise BundleError(
                f"bundle {self.name}: need {len(self.manifest.exits)} temperatures and thresholds"
            )
        for ex, t, thr in zip(self.manifest.exits, temperatures, thresholds, strict=True):
            ex.temperature = float(t)
            ex.threshold = None if thr is None else float(thr)
        if calibration is not None:
            self.manifest.calibration = dict(calibration)
        # Re-validate so a bad value never reaches disk.
        self.manifest = Manifest.model_validate(self.manifest.model_dump(mode="json"))
        self.save()

    def refresh_files(self) -> None:
        """Recompute sha256/size of every listed file (after a deliberate file change)."""
        for rel in list(self.manifest.files):
            self.manifest.files[rel] = file_entry(self.root / rel)
        self.save()


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load the bundle at ``path`` (a directory or its manifest.json) and verify checksums.

    Raises :class:`BundleError` naming the manifest field or the file that is wrong.
    """
    p = Path(path)
    root = p.parent if p.name == MANIFEST_NAME else p
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    manifest = read_manifest(root / MANIFEST_NAME)
    bundle = Bundle(root, manifest)
    if verify:
        bundle.verify()
    return bundle
