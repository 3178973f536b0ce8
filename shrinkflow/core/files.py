"""Writing files so that a reader never sees half of one, and naming files by their content."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` (same suffix) for the block to write a file or a folder to.

    When the block ends without an error the result is renamed to `path` in one step (a folder must not
    exist there yet); when it raises, whatever the block wrote is removed. A crash in between leaves only a
    hidden `.partial-*` name, never a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield partial
        os.replace(partial, path) if partial.is_file() else os.rename(partial, path)
    except BaseException:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: str | Path, content: bytes) -> None:
    with atomic_path(path) as partial:
        partial.write_bytes(content)


def write_json_atomically(path: str | Path, data: Any) -> None:
    write_bytes_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """The sha256 of a file's content, computed once per process for a given size and modification time; for a
    folder (a prepared dataset's shards), a digest of every file in it with its path."""
    if Path(path).is_dir():
        digest = hashlib.sha256()
        for member in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            digest.update(f"{member.relative_to(path).as_posix()}\0{file_fingerprint(member)}\n".encode())
        return digest.hexdigest()
    status = Path(path).stat()
    return _fingerprint(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


@lru_cache(maxsize=256)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)
