"""Durable file-system steps shared by the record store, the model store and the web."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so a rename into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotRegularFileError(OSError):
    """A pipe, socket or device where a file was expected: reading it might never end."""


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """Read a whole regular file of at most `max_bytes`.

    Raises FileNotFoundError, IsADirectoryError, NotRegularFileError (pipes, sockets,
    devices: opened without blocking and refused unread) or OSError (too large, unreadable).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(
                errno.EINVAL, "not a regular file (a pipe, socket or device)", str(path)
            )
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"file too large ({st.st_size} bytes, limit {max_bytes})")
        return f.read(max_bytes + 1)
