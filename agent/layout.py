"""Lay out a generation's files from the cache as the runtime expects them.

    <gen_dir>/models/            AZUREML_MODEL_DIR
        <file paths>             one model: its files directly in the folder
        <name>/<version>/<paths> several models: one folder per model and version
    <gen_dir>/source/<paths>     the entry script's source folder (when there is one)

Files are hardlinked from the cache (same filesystem, no copy, no extra space) and copied
when a hardlink is impossible. Every relative path is checked so a manifest cannot write
outside the generation's folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.cache import ArtifactCache
from protos.edgeport.v1 import agent_pb2


class LayoutError(Exception):
    """A manifest names a path that cannot be laid out (absolute, `..`, or clashing)."""


@dataclass
class Layout:
    """Where one generation's files were put."""

    root: Path
    model_dir: Path
    source_dir: Path | None


def _safe_relative(path: str, where: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or rel.parts[:1] == ("",):
        raise LayoutError(f"{where}: file path {path!r} must be relative and stay inside its folder")
    return rel


def _place(cache: ArtifactCache, ref: agent_pb2.FileRef, dest_root: Path, where: str) -> None:
    dest = dest_root / _safe_relative(ref.path, where)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    src = cache.path(ref.digest)
    try:
        os.link(src, dest)
    except OSError:  # cross-device or no hardlink support: copy
        shutil.copyfile(src, dest)
    cache.touch(ref.digest)


def model_dir_layout(models: list[agent_pb2.ModelArtifact]) -> list[tuple[agent_pb2.ModelArtifact, PurePosixPath]]:
    """Each model with the folder (relative to AZUREML_MODEL_DIR) its files go to."""
    if len(models) == 1:
        return [(models[0], PurePosixPath("."))]
    return [(m, PurePosixPath(_safe_relative(m.name, "model name").as_posix()) / str(m.version)) for m in models]


def lay_out(cache: ArtifactCache, manifest: agent_pb2.ServiceManifest, gen_dir: Path) -> Layout:
    """Build `gen_dir` for `manifest` from cached blobs (all must be in the cache); replaces an older attempt."""
    if gen_dir.exists():
        shutil.rmtree(gen_dir)
    model_dir = gen_dir / "models"
    model_dir.mkdir(parents=True)
    for model, sub in model_dir_layout(list(manifest.models)):
        for ref in model.files:
            _place(cache, ref, model_dir / sub, f"model {model.name}:{model.version}")
    source_dir = None
    if manifest.source.files:
        source_dir = gen_dir / "source"
        source_dir.mkdir()
        for ref in manifest.source.files:
            _place(cache, ref, source_dir, f"service {manifest.name} source")
    return Layout(root=gen_dir, model_dir=model_dir, source_dir=source_dir)


def blobs_of(manifest: agent_pb2.ServiceManifest) -> list[tuple[str, agent_pb2.FileRef]]:
    """Every (repository, FileRef) a manifest needs, models first, without duplicates."""
    seen: set[str] = set()
    out = []
    refs = [(m.repository, f) for m in manifest.models for f in m.files]
    refs += [(manifest.source.repository, f) for f in manifest.source.files]
    for repo, ref in refs:
        if ref.digest not in seen:
            seen.add(ref.digest)
            out.append((repo, ref))
    return out
