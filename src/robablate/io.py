"""Atomic writes and hash-keyed caches: a killed run never leaves a half-written file or folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars and paths show up in metric dicts; store them as plain JSON values.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (paths are converted; callers pass plain values, e.g. a
    spec's fields, never a config)."""
    def plain(o: Any) -> Any:
        return os.fspath(o) if isinstance(o, os.PathLike) else str(o)
    blob = json.dumps(parts, sort_keys=True, default=plain, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def atomic_dir(final: Path, build: Callable[[Path], Any]) -> Path:
    """Create folder `final` once: `build(tmp)` fills a temp folder beside it, which is renamed into
    place under a file lock. Concurrent callers wait for the first; a killed build leaves only a
    temp folder, removed by the next builder, never a half-written `final`."""
    final = Path(final)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed build of this key
            shutil.rmtree(stale, ignore_errors=True)
        _build_then(final, build, os.replace)
    return final


def replace_dir(final: Path, build: Callable[[Path], Any]) -> Path:
    """(Re)write folder `final`: `build(tmp)` fills a temp folder beside it, which then takes its
    place; an existing `final` is moved aside first (os.replace cannot overwrite a non-empty folder),
    so a reader sees the old complete folder or the new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)

    def swap(tmp: Path, dst: Path) -> None:
        old = None
        if dst.exists():
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
            os.replace(dst, old / dst.name)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    _build_then(final, build, swap)
    return final


def _build_then(final: Path, build: Callable[[Path], Any], place: Callable[[Path, Path], None]) -> None:
    """build(tmp) in a temp folder beside `final`, then place(tmp, final); the temp folder is removed
    if either fails."""
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a shared cache must be readable by others
    try:
        build(tmp)
        place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
