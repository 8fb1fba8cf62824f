"""Atomic file writes: the one way tinyfcn writes a file. A leaf module (standard library
only), so data, serialization and the training loop can all use it."""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A hidden sibling of `path` that no other writer picks: `.NAME.<random>.tmp`."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of `path` a killed writer left behind (only our own names)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        token = stale.name[len(path.name) + 2:-len(TMP_SUFFIX)]
        if len(token) == 12 and all(c in "0123456789abcdef" for c in token):
            stale.unlink(missing_ok=True)


def fsync_directory(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Call `write(file object)` on a temporary file beside `path`, fsync, then `os.replace`
    and fsync the folder: a failure or a kill half-way leaves the previous `path` intact
    (and the next write of `path` removes the temporary a kill left).

    The file gets the usual mode (0666 less the umask: `os.open` applies it), not
    mkstemp's 0600, and the umask is never changed to find out what it is."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's words for a file standing where the folder must be
        raise NotADirectoryError(f"cannot write {path}: {path.parent} is a file, not a "
                                 f"folder") from None
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
