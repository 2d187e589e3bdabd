"""Where a lineage root lives: a local folder (the default), or a URI every node can reach.

A URI is anything pyarrow.fs opens: `s3://bucket/path`, `gs://bucket/path`, `hdfs://...`, and
`file:///abs/path` (the tests take that path through the same code). Each process then works in a
local mirror of the root, `$EVO_CACHE/<digest of the URI>/` (`EVO_CACHE` defaults to
`~/.cache/evo`), and evo's code reads and writes the mirror as it would a local root. This module
moves whole files between the mirror and the URI:

- every atomic write under a mirror (evo.atomic) is uploaded right after the local rename: the
  remote object is replaced whole, never seen half-written;
- content-addressed parts (`models/<sha>/`, `data/<sha>.parquet`) and a run's input files are
  downloaded the first time a process needs them; they never change, so a copy is good forever
  (a model's `meta.json` comes last, so its presence means the folder is complete);
- the mutable files (ledger, registry, corrections, decisions, evals, trials) are downloaded fresh
  when a `Lineage` opens the root, and by serving replicas each time they follow it.

Object stores have no locks: with a URI root, one driver writes at a time (evo's flocks still
serialize writers on one machine). Ray Train and Tune write their own checkpoints straight to
`<uri>/runs/...` (their `storage_path`).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Optional

# Not mirrored when a root is opened: content-addressed or large (fetched when needed), or Ray's own.
LAZY_PREFIXES = ("models/", "data/", "runs/ray/", "runs/tune/", "experiments/")
LAZY_SUFFIXES = (".parquet", ".safetensors")

_MIRRORS: dict[Path, Remote] = {}


def is_uri(root: str | os.PathLike) -> bool:
    return isinstance(root, str) and "://" in root


class StorageError(OSError):
    """A lineage root URI that cannot be used; the message names it and why."""


class Remote:
    """One URI root and this process's mirror of it."""

    def __init__(self, uri: str, cache: Optional[str | os.PathLike] = None):
        import pyarrow.fs as pafs

        self.uri = uri.rstrip("/")
        try:
            self.fs, base = pafs.FileSystem.from_uri(self.uri)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError with its own text
            raise StorageError(f"lineage root {uri}: cannot open it ({e})") from None
        self.base = base.rstrip("/")
        cache = Path(cache or os.environ.get("EVO_CACHE") or Path.home() / ".cache" / "evo")
        self.local = (cache / hashlib.sha256(self.uri.encode()).hexdigest()[:16]).resolve()
        self.local.mkdir(parents=True, exist_ok=True)
        self.fs.create_dir(self.base, recursive=True)

    def rel(self, path: str | os.PathLike) -> str:
        return Path(path).resolve().relative_to(self.local).as_posix()

    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    # ---------------------------------------------------------------- up
    def upload(self, path: str | os.PathLike) -> None:
        """Replace the remote copy of the mirror file `path` whole (a temp object, then a move
        where the filesystem has one; an object store's single PUT is already all-or-nothing)."""
        rel = self.rel(path)
        dst = self._remote(rel)
        self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        data = Path(path).read_bytes()
        if self.fs.type_name in ("s3", "gcs"):
            with self.fs.open_output_stream(dst) as out:
                out.write(data)
            return
        tmp = f"{dst}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, dst)

    def upload_tree(self, folder: str | os.PathLike, last: str = "meta.json") -> None:
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        for p in sorted(files, key=lambda p: p.name == last):  # `last` after everything else
            self.upload(p)

    # ---------------------------------------------------------------- down
    def _info(self, rel: str):
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self._remote(rel))
        return None if info.type == pafs.FileType.NotFound else info

    def download(self, rel: str) -> bool:
        """Fetch one file into the mirror (replacing the local copy); False when there is none."""
        import pyarrow.fs as pafs

        info = self._info(rel)
        if info is None or info.type != pafs.FileType.File:
            return False
        dst = self.local / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.part"
        with self.fs.open_input_stream(self._remote(rel)) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 22):
                out.write(block)
        os.replace(tmp, dst)
        return True

    def files_under(self, rel: str = "") -> list[str]:
        """Relative paths of every file under `rel` in the remote root."""
        import pyarrow.fs as pafs

        if rel and self._info(rel) is None:
            return []
        sel = pafs.FileSelector(self._remote(rel), recursive=True, allow_not_found=True)
        n = len(self.base) + 1
        return sorted(i.path[n:] for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and not i.path.endswith(".tmp"))

    def download_tree(self, rel: str, last: str = "meta.json") -> bool:
        files = self.files_under(rel)
        for f in sorted(files, key=lambda f: f.rsplit("/", 1)[-1] == last):
            self.download(f)
        return bool(files)

    def pull_state(self) -> int:
        """Download every mutable file fresh (the lazy, content-addressed parts stay remote)."""
        todo = [f for f in self.files_under() if not f.startswith(LAZY_PREFIXES) and not f.endswith(LAZY_SUFFIXES)
                and "/.locks/" not in f and not f.startswith(".locks/")]
        for f in todo:
            self.download(f)
        return len(todo)


def resolve(root: str | os.PathLike, cache: Optional[str | os.PathLike] = None) -> Path:
    """The local folder that stands for `root`: the folder itself, or this process's mirror of a
    URI (registered, so writes under it are uploaded and lazy reads download)."""
    if not is_uri(root):
        return Path(root).resolve()
    for remote in _MIRRORS.values():
        if remote.uri == str(root).rstrip("/") and (cache is None or remote.local.parent == Path(cache).resolve()):
            return remote.local
    remote = Remote(str(root), cache)
    _MIRRORS[remote.local] = remote
    return remote.local


def remote_for(path: str | os.PathLike) -> Optional[Remote]:
    if not _MIRRORS:
        return None
    p = Path(path).resolve()
    for local, remote in _MIRRORS.items():
        if p == local or local in p.parents:
            return remote
    return None


def uri_of(path: str | os.PathLike) -> str:
    """What to hand another process for `path`: its URI when it is in a mirror, else the path."""
    remote = remote_for(path)
    return remote.uri_of(remote.rel(path)) if remote else str(path)


def location(root: str | os.PathLike) -> str:
    """A root as every process should open it: a URI as given, a folder made absolute."""
    return str(root).rstrip("/") if is_uri(root) else str(Path(root).resolve())


def open_root(root: str | os.PathLike) -> Path:
    """The local folder for a root: the folder itself (made absolute, not created), or this process's
    mirror of a URI with its mutable files fetched fresh, as a `Lineage` opens it."""
    local = resolve(root)
    if is_uri(root):
        remote_for(local).pull_state()
    return local


def after_write(path: str | os.PathLike) -> None:
    """Called by evo.atomic after every write: upload it when it is in a mirror."""
    remote = remote_for(path)
    if remote is not None:
        remote.upload(path)


def after_write_tree(folder: str | os.PathLike) -> None:
    remote = remote_for(folder)
    if remote is not None:
        remote.upload_tree(folder)


def ensure(path: str | os.PathLike) -> bool:
    """Make sure an immutable file of a mirror is here (downloading it once); True if it exists."""
    path = Path(path)
    if path.exists():
        return True
    remote = remote_for(path)
    return remote is not None and remote.download(remote.rel(path))


def ensure_tree(folder: str | os.PathLike, marker: str = "meta.json") -> bool:
    """The same for a content-addressed folder, complete once `marker` is in it."""
    folder = Path(folder)
    if (folder / marker).exists():
        return True
    remote = remote_for(folder)
    return remote is not None and remote.download_tree(remote.rel(folder), last=marker) and (folder / marker).exists()


def refresh(path: str | os.PathLike) -> None:
    """Download a mutable file fresh when it is in a mirror (no-op for a local root)."""
    remote = remote_for(path)
    if remote is not None:
        remote.download(remote.rel(path))


def local_file(path_or_uri: str, root: str) -> str:
    """A local path for a run's input file, given as a path or as a URI under the lineage root
    `root`; downloaded fresh each time (a rerun may have rewritten it)."""
    return _fetch(path_or_uri, root, tree=False)


def local_tree(path_or_uri: str, root: str) -> str:
    """The same for a run's input folder (the base model's initial weights and tokenizer)."""
    return _fetch(path_or_uri, root, tree=True)


def _fetch(path_or_uri: str, root: str, tree: bool) -> str:
    if not is_uri(path_or_uri):
        return path_or_uri
    local_root = resolve(root)
    remote = _MIRRORS[local_root]
    if not path_or_uri.startswith(remote.uri + "/"):
        raise StorageError(f"{path_or_uri}: not under the lineage root {root}")
    rel = path_or_uri[len(remote.uri) + 1:]
    if not (remote.download_tree(rel, last="") if tree else remote.download(rel)):
        raise FileNotFoundError(f"{path_or_uri}: no such {'folder' if tree else 'file'}")
    return str(local_root / rel)
