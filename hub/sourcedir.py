"""The source folder of a deployment, taken as a stable snapshot before anything is uploaded.

What is uploaded follows the convention users know from Azure ML: a `.amlignore` in a
folder lists what to leave out of it (gitignore syntax, via `pathspec`); where a folder
has none, its `.gitignore` is used instead. Ignore files in sub-folders apply below them,
and a deeper file's rules win, as in git. `__pycache__/` and `.git/` are never uploaded.

Each kept file is copied into a private temp folder while it is hashed, and checked
for change while it was read (size, modification time, bytes read): a file that a
running process writes to (a log, a data file) is an error that names it, raised
before a single byte is uploaded. Uploads then read the copy, so the bytes sent always
match the digest the hub is told.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from hub.errors import BadInput, HubError

IGNORE_FILES = (".amlignore", ".gitignore")  # first one present in a folder wins
ALWAYS_SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
KEY_PATTERNS = pathspec.GitIgnoreSpec.from_lines(["*.key", "*.pem", "id_*", "!id_*.pub"])
LARGE_SOURCE_BYTES = 50 * 1024 * 1024
MAX_SOURCE_FILES = 1000
CHUNK = 1024 * 1024


class SourceChanged(HubError):
    """A source file changed while it was being read: no consistent snapshot of it exists (exit 1)."""


@dataclass(frozen=True)
class SnapshotFile:
    """One file of the snapshot: its path inside the source folder, the copy to upload, digest and size."""

    path: str
    copy: Path
    digest: str
    size: int


@dataclass
class SourceSnapshot:
    """The files to upload (copies in a temp folder that lives as long as the `snapshot_source` block)."""

    root: Path
    files: list[SnapshotFile]
    ignored: int = 0  # files and folders left out by ignore files
    ignore_files: list[str] = field(default_factory=list)  # the ignore files that applied, relative paths

    @property
    def total_bytes(self) -> int:
        """Sum of the kept files' sizes."""
        return sum(f.size for f in self.files)

    def key_like(self) -> list[str]:
        """Kept files whose names look like private keys (`*.key`, `*.pem`, `id_*`)."""
        return [f.path for f in self.files if KEY_PATTERNS.match_file(f.path.rsplit("/", 1)[-1])]

    def summary(self) -> str:
        """`uploading N files (SIZE) from DIR` plus what was ignored, in one line."""
        line = f"uploading {len(self.files)} file{'s' if len(self.files) != 1 else ''} " \
               f"({_human_size(self.total_bytes)}) from {self.root}"
        if self.ignore_files:
            line += f"; {self.ignored} left out by {', '.join(self.ignore_files)}"
        return line

    def warnings(self) -> list[str]:
        """Warnings a user should see before the upload: key-like files, a large folder."""
        out = []
        keys = self.key_like()
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            what = "looks like a private key" if len(keys) == 1 else "look like private keys"
            them = "it" if len(keys) == 1 else "them"
            out.append(f"{shown} in {self.root} {what} and will be uploaded to the hub and every device; "
                       f"list {them} in .amlignore to leave {them} out")
        if self.total_bytes > LARGE_SOURCE_BYTES:
            biggest = sorted(self.files, key=lambda f: f.size, reverse=True)[:3]
            out.append(f"source folder {self.root} holds {_human_size(self.total_bytes)} "
                       f"(largest: {', '.join(f'{f.path} {_human_size(f.size)}' for f in biggest)}); "
                       "sourceDirectory should hold the scoring code: register data as a model, "
                       "or list it in .amlignore")
        return out


@contextlib.contextmanager
def snapshot_source(root: Path, *, max_files: int = MAX_SOURCE_FILES) -> Iterator[SourceSnapshot]:
    """Select, copy and hash the source folder's files; the copies are removed when the block ends.

    BadInput for too many files, a broken link, a link loop, something that is not a
    regular file or cannot be read; SourceChanged for a file that changed while read.
    """
    root = Path(root)
    chosen, ignored, used = select_files(root)
    if len(chosen) > max_files:
        raise BadInput(f"source directory {root} has {len(chosen)} files to upload; the limit is {max_files} "
                       "(point sourceDirectory at the scoring code only, or list the rest in .amlignore)")
    with tempfile.TemporaryDirectory(prefix="edgeport-source-") as tmp:
        files = [_copy_and_hash(source, rel, Path(tmp) / str(i)) for i, (source, rel) in enumerate(chosen)]
        yield SourceSnapshot(root, files, ignored, used)


def select_files(root: Path) -> tuple[list[tuple[Path, str]], int, list[str]]:
    """(kept (path, relative path) pairs sorted, count left out by ignore files, ignore files used)."""
    kept: list[tuple[Path, str]] = []
    ignored = 0
    used: list[str] = []
    seen_dirs: set[str] = set()
    # Each entry: (folder's path relative to root with a trailing "/" or "", its spec); deepest last.
    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def is_ignored(rel: str, is_dir: bool) -> bool:
        for base, spec in reversed(specs):  # deepest ignore file decides first, as in git
            if not rel.startswith(base):
                continue
            result = spec.check_file(rel[len(base):] + ("/" if is_dir else ""))
            if result.include is not None:
                return bool(result.include)
        return False

    def walk(folder: Path, rel_dir: str) -> None:
        nonlocal ignored
        real = os.path.realpath(folder)
        if real in seen_dirs:
            raise BadInput(f"source directory {root}: folder {folder} links back into it (a loop)")
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise BadInput(f"cannot read folder {folder}: {(exc.strerror or str(exc)).lower()}") from None
        pushed = False
        for name in IGNORE_FILES:
            ignore_path = folder / name
            if ignore_path.is_file():
                try:
                    lines = ignore_path.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError as exc:
                    raise BadInput(f"cannot read {ignore_path}: {(exc.strerror or str(exc)).lower()}") from None
                specs.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))
                used.append(rel_dir + name)
                pushed = True
                break
        for entry in entries:
            rel = rel_dir + entry.name
            path = Path(entry.path)
            is_dir = path.is_dir()  # follows links: a linked folder's files belong to the source
            if is_dir and entry.name in ALWAYS_SKIPPED_DIRS:
                continue
            if is_ignored(rel, is_dir):
                ignored += 1
                continue
            if is_dir:
                walk(path, rel + "/")
            else:
                kept.append((path, rel))
        if pushed:
            specs.pop()

    walk(root, "")
    return kept, ignored, used


def _copy_and_hash(source: Path, rel: str, copy: Path) -> SnapshotFile:
    """Copy `source` to `copy` while hashing it; SourceChanged if it changed while it was read."""
    try:
        fd = os.open(source, os.O_RDONLY)
    except FileNotFoundError:
        if source.is_symlink():
            raise BadInput(f"cannot read {source}: broken symbolic link") from None
        raise SourceChanged(f"{source} disappeared while the source folder was read") from None
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {(exc.strerror or str(exc)).lower()}") from None
    h = hashlib.sha256()
    size = 0
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise BadInput(f"cannot upload {source}: not a regular file (list it in .amlignore)")
        with os.fdopen(fd, "rb", closefd=False) as src, open(copy, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {(exc.strerror or str(exc)).lower()}") from None
    finally:
        os.close(fd)
    if size != before.st_size or after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        raise SourceChanged(
            f"{source} changed while it was read ({before.st_size} bytes when opened, {size} read, "
            f"{after.st_size} now): stop what writes to it, or list it in .amlignore; nothing was uploaded"
        )
    return SnapshotFile(rel, copy, "sha256:" + h.hexdigest(), size)


def _human_size(n: int) -> str:
    """Bytes as B / KB / MB / GB (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"

