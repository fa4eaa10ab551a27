"""Files that readers may see at any moment (a resumed search, another job) are written whole or not at all.

Every file and folder written here gets the permissions the user's umask gives, as ``open()`` and
``mkdir()`` would (``tempfile.mkstemp``/``mkdtemp`` make them private, 0600/0700, which the rename
would keep). The temporary names are created with ``os.open(..., O_EXCL, 0o666)`` and
``os.mkdir(..., 0o777)``, so the kernel applies the umask (and a folder's default ACL) itself: the
umask is never read, which would take two ``os.umask`` calls that briefly set it to another value
for every thread of the process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
_ATTEMPTS = 100  # random names tried before giving up (a clash is a 1 in 2**48 event per try)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_unique(folder: Path, prefix: str, suffix: str, create: Callable[[Path], T]) -> T:
    """``create(folder / <prefix><random><suffix>)`` for the first random name that does not exist yet (O_EXCL semantics)."""
    for _ in range(_ATTEMPTS):
        candidate = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return create(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name {prefix}*{suffix} after {_ATTEMPTS} tries; remove stale "
                          f"{prefix}* entries there")


def new_temporary_file(folder: str | Path, prefix: str = ".tmp.", suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file in ``folder`` with a unique name, opened for writing: ``(descriptor, path)``.

    Like ``tempfile.mkstemp`` but with the mode ``open()`` gives (0666 less the umask), so that the file
    keeps the user's permissions when it is renamed onto its final name.
    """
    return _create_unique(Path(folder), prefix, suffix, lambda path: (os.open(path, _FILE_FLAGS, 0o666), path))


def new_temporary_folder(folder: str | Path, prefix: str = ".tmp.") -> Path:
    """A new, empty folder in ``folder`` with a unique name; like ``tempfile.mkdtemp`` but with the mode ``mkdir()`` gives
    (0777 less the umask), so that it keeps the user's permissions when it is renamed into place."""

    def make(path: Path) -> Path:
        path.mkdir(0o777)
        return path

    return _create_unique(Path(folder), prefix, "", make)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success fsync it and ``os.replace`` it onto ``path``.

    A reader (or a resumed run) never sees a half-written file; on an error the old file stays and the
    temporary one is removed. The parent folder is created if needed. The file gets the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = new_temporary_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (:func:`atomic_write`).

    NaN and infinity are refused (``allow_nan=False``): they are not JSON and would break other readers.
    """
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
    return Path(path)


@contextmanager
def replaced_folder(path: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``path`` to fill; on success it replaces ``path`` whole, on an error it is removed.

    The folder counterpart of :func:`atomic_write`: a saved dataset is never half-written, and an
    interrupted run leaves the old one (or none) in place. The folder gets the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = new_temporary_folder(path.parent, prefix=f".{path.name}.")
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
