"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one behind."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from common.errors import DataError


def current_umask() -> int:
    """The process umask, read without changing it (Linux), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` for a temporary file beside `path`, then rename it onto `path`.

    The file gets the permissions a plain open() would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keeps the real suffix last: some writers (Keras, np.savez) insist on it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(exc):  # torch.save's inline_container, numpy, plain writes: name the disk
            raise DataError(f"{path}: the disk is full (free space on {path.parent}: "
                            f"{_size(shutil.disk_usage(path.parent).free)}); free some and rerun") from None
        raise


def write_or_print(text: str, out: Path | None, what: str) -> None:
    """A command's Markdown: into `out` (atomically, saying where) or on stdout."""
    if out:
        atomic_write_text(out, text)
        print(f"{what}: {out}")
    else:
        print(text, end="")


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):  # torch.save wraps the OSError in a RuntimeError
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Refuse before writing `needed_bytes` into `folder` when its disk has not got them (a memory-mapped
    file on a full disk dies with SIGBUS, not with an error)."""
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise DataError(f"{folder}: {what} needs {_size(needed_bytes)}, the disk has {_size(free)} free; "
                        "free some space or choose another --cache-dir")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))
