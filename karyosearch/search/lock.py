"""The writer lock of an index folder (a `.NAME.lock` file beside it, held with flock), and
the deletion of a folder's files that no manifest a reader may hold names."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# name prefixes of the files a writer may delete: segments, templates, temporary files and
# the two files of a karyosearch-index/1 folder
OUR_FILES = ("seg-", "template-", ".tmp-", "faiss.index", "store.h5")


class LockBusy(Exception):
    """Another process holds the lock."""


class FileLock:
    """An exclusive, non-blocking lock on `.NAME.lock` beside `path` (POSIX flock; elsewhere a
    no-op). Folders made to hold the lock file, and the file, are removed on release when
    `path` still does not exist, so a failed first write leaves nothing behind."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.file = self.path.parent / f".{self.path.name}.lock"
        self._made: list[Path] = []
        self._fh = None

    def acquire(self) -> None:
        """Raises LockBusy, or OSError when the lock file cannot be made."""
        self._made = [p for p in reversed(self.path.absolute().parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the generation check still refuses a race
            return
        fh = open(self.file, "a+")  # noqa: SIM115 - closed in release
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()  # the file stays: its holder is using it
            raise LockBusy(str(self.path)) from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        self._tidy()

    def _tidy(self) -> None:
        if self.path.exists():
            return
        with contextlib.suppress(OSError):
            self.file.unlink(missing_ok=True)
        for folder in reversed(self._made):
            try:
                folder.rmdir()
            except OSError:
                break


def collect_garbage(path: Path, keep: set[str]) -> None:
    """Delete the files of ours in `path` whose names are not in `keep` (the files that the
    new and the previous manifest name: a reader that read the previous one may still be
    opening them; older readers re-read the manifest)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        if entry.name not in keep and entry.name.startswith(OUR_FILES) and entry.is_file():
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
