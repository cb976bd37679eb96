"""An advisory lock on a folder, held for the life of the process that writes into it.

The lock is `flock` on `FOLDER/.lock`. The kernel releases it when its holder exits, however
it exits (kill -9 included), so a stale lock is one nobody holds: no process ids are compared,
and a lock taken on one host is seen on another that shares the filesystem, where the
filesystem supports locking (local disks; NFS through its lock manager, see
docs/architecture.md). The file keeps a line about the current holder, for the message a
second writer gets.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import sys
from pathlib import Path

from metalearn.core.errors import UserError

LOCK_FILE = ".lock"


class FolderLock:
    """`with FolderLock(folder, what):` holds the folder's lock or raises UserError naming the
    holder. `what` says what the holder is doing, e.g. 'metalearn train'."""

    def __init__(self, folder: Path, what: str):
        self.path = Path(folder) / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{str(self.path.parent)!r} is in use by {holder}; wait for it to finish or "
                "stop it (the lock frees itself when its holder exits)"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        command = " ".join(sys.argv) or "python"
        line = (
            f"{self.what} (pid {os.getpid()} on {socket.gethostname()} since {started}: "
            f"{command})\n"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            # the holder line stays: it is read only while somebody holds the lock
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
