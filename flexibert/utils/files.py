"""Files that readers may see at any moment (a resumed search, another job) are written whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success fsync it and ``os.replace`` it onto ``path``.

    A reader (or a resumed run) never sees a half-written file; on an error the old file stays and the
    temporary one is removed. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
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
    interrupted run leaves the old one (or none) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
