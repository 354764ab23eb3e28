"""Only regular files are read: every path is checked before it is opened.

A named pipe (FIFO) blocks whoever opens it for reading until a writer comes, so it must
never be opened as if it were an image or hashed; sockets and devices are no images either,
and a symlink loop makes `Path.resolve` raise RuntimeError. `file_problem` says in a few
words why a path is no readable regular file (None when it is one); `open_regular` opens a
file for reading without ever blocking on a FIFO (O_NONBLOCK, then a check of what was
opened, so a file swapped for a FIFO between the check and the open is caught too).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

FOLDER = "a folder, not a file"


class NotRegularFileError(OSError):
    """A path that is no readable regular file; `reason` says what it is instead."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(errno.EINVAL, reason, str(path))
        self.reason = reason


def kind_problem(mode: int) -> str | None:
    """Why an `os.stat` mode is no regular file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return FOLDER
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    return "not a regular file"


def os_problem(err: OSError, path: str | os.PathLike) -> str:
    """The few words for an OSError met while looking at `path`."""
    if err.errno == errno.ELOOP:
        return "a symlink loop"
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "a broken symlink" if os.path.islink(path) else "no such file"
    if err.errno == errno.EACCES or err.errno == errno.EPERM:
        return "permission denied"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return f"cannot read ({err.strerror or err})"


def file_problem(path: str | os.PathLike) -> str | None:
    """None when `path` is a regular file this process may read (symlinks followed); else
    why not: no such file, a broken symlink, a symlink loop, a folder, a named pipe, a
    socket, a device, or permission denied. Never opens the path."""
    try:
        st = os.stat(path)
    except OSError as err:
        return os_problem(err, path)
    except ValueError:  # an embedded NUL byte
        return "not a valid path"
    reason = kind_problem(st.st_mode)
    if reason is None and not os.access(path, os.R_OK):
        return "permission denied"
    return reason


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for binary reading. A missing file raises FileNotFoundError as
    `open` does; anything else that is no readable regular file raises NotRegularFileError
    (an OSError) naming the reason. Never blocks: what is no regular file is not opened, and
    the open itself is non-blocking, so a file swapped for a FIFO meanwhile is refused too."""
    try:
        reason = kind_problem(os.stat(path).st_mode)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        reason = "a broken symlink"
    except OSError as err:
        reason = os_problem(err, path)
    if reason is not None:
        raise NotRegularFileError(path, reason)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise NotRegularFileError(path, os_problem(err, path)) from None
    try:
        reason = kind_problem(os.fstat(fd).st_mode)
        if reason is not None:
            raise NotRegularFileError(path, reason)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def absolute(path: str | os.PathLike) -> Path:
    """`path` resolved where it can be (symlinks followed), else made absolute as written:
    a symlink loop or an unreadable parent never raises here (`Path.resolve` would raise
    RuntimeError on a loop); `file_problem` then says what is wrong with it."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))
