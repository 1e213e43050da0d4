"""One training per run directory: an advisory `fcntl` lock on `<run>/.lock`.

The kernel drops the lock when its owner exits, however it exits (kill -9 included), so a lock is
never stale; the file holds the owner's PID and host for the message a second process gets.
The lock file is never opened through a symbolic link (O_NOFOLLOW) and must be a regular file: a
`.lock` planted as a link in a shared or unpacked run folder would otherwise make the trainer
truncate the file it points to.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

from common.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ConfigError(f"{self.path.parent}: in use by a training still running ({owner}); "
                                  "wait for it or choose another --run-dir") from None
            # The previous owner may have unlinked the file between our open and flock: retry on the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:  # ELOOP: the path is a symbolic link
            if self.path.is_symlink():
                raise ConfigError(f"{self.path}: is a symbolic link, not a lock file; a run folder's .lock is "
                                  "never followed (remove the link if you trust this folder)") from None
            raise ConfigError(f"{self.path}: cannot open the run lock ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted as .lock
            os.close(fd)
            raise ConfigError(f"{self.path}: is not a regular file; remove it if you trust this folder")
        return fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
