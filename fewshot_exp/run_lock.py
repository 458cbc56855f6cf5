"""A run dir (and a sweep dir) belongs to one process at a time.

`held(directory)` takes an advisory lock (`fcntl.flock`) on `<directory>/.lock` for as long as the run lasts, and
writes who holds it into the file. A second run, resume or sweep on a locked dir is refused with a one-line
error naming the holder. The kernel drops the lock when its process ends, however it ends, so the lock of a
killed run never blocks its resume. On a file system without locks the run goes on unlocked, with a warning.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fewshot_exp.errors import UserError

LOCK_FILE = ".lock"


class DirInUse(UserError):
    """The dir is locked by another live process."""


def holder_text() -> str:
    command = " ".join(["fewshot_exp", *sys.argv[1:]])
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: {command}"


@contextmanager
def held(
    directory: Path, what: str = "run dir", hint: str = "choose another hydra.run.dir", wait: bool = False
) -> Iterator[None]:
    """Hold the lock of `directory` (created if missing) for the block; DirInUse if another process holds it
    (`wait`: wait for it instead)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip().splitlines()
            raise DirInUse(
                f"{what} {directory} is in use by another run ({holder[0] if holder else 'holder unknown'}); "
                f"wait for it to end, or {hint}"
            ) from None
        except OSError as e:  # e.g. a network file system mounted without locking
            warnings.warn(f"cannot lock {directory} ({e.strerror}); going on without a lock", stacklevel=3)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder_text() + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
