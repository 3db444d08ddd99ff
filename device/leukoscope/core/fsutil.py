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


def mkdir_durable(path: Path) -> None:
    """Create a folder and its missing parents so that they survive a power cut.

    A new folder's name lives in its parent, which fsyncing the folder itself does not
    flush: each new folder's parent is fsynced once the folder is in it.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for new in reversed(missing):
        fsync_dir(new.parent)


class NotRegularFileError(OSError):
    """A pipe, socket or device where a file was expected: reading it might never end."""


class LinkInBundleError(OSError):
    """A symbolic link inside a folder whose files must all be its own (a bundle)."""


def refuse_links(root: Path, rel: str | Path) -> Path:
    """`root / rel`, after checking no part of `rel` (folder or file) is a symbolic link.

    A bundle's files are hashed and copied as they are; a linked folder would let a
    bundle name files outside itself. Raises LinkInBundleError.
    """
    path = Path(root)
    for part in Path(rel).parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Path(root) / rel  # the open that follows says it is missing
        if stat.S_ISLNK(st.st_mode):
            raise LinkInBundleError(
                errno.ELOOP, "a symbolic link (a bundle holds its own files)", str(path)
            )
    return path


def open_regular(path: Path, *, follow: bool = True) -> int:
    """Open a regular file for reading and return its descriptor.

    Opened without blocking, so a pipe never hangs the caller; with `follow=False` a
    final symbolic link is refused. Raises FileNotFoundError, IsADirectoryError,
    NotRegularFileError or OSError.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(
                errno.EINVAL, "not a regular file (a pipe, socket or device)", str(path)
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: Path, max_bytes: int, *, follow: bool = True) -> bytes:
    """Read a whole regular file of at most `max_bytes`.

    Raises FileNotFoundError, IsADirectoryError, NotRegularFileError (pipes, sockets,
    devices: opened without blocking and refused unread) or OSError (too large, unreadable,
    or with `follow=False` a symbolic link).
    """
    fd = open_regular(path, follow=follow)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"file too large ({st.st_size} bytes, limit {max_bytes})")
        return f.read(max_bytes + 1)
