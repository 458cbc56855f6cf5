"""Writing files so that a kill, a crash or a full disk never leaves a half-written file under the real name.

`atomic_writer(path)` yields a temporary file beside `path` (`.<name>.<random>.tmp`) that is flushed, fsynced
and moved over `path` when the block succeeds, and removed when it fails; `remove_partial_writes` deletes the
temporary files a killed process left behind. Every writer of a run dir, the checkpoints and the dataset cache use
it. A full disk is reported as `OSError(ENOSPC)` naming the file, whatever the writer raised.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: free bytes below which a failed write is taken for a full disk (torch.save reports it without an errno)
NEARLY_FULL = 1 << 20


def partial_name(path: Path) -> str:
    return f".{path.name}."


def size_text(n: int) -> str:
    """ "512 B", "12.3 KiB", "4.0 MiB", "1.5 GiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_free_space(directory: Path, needed: int, path: Path) -> None:
    """OSError(ENOSPC) before writing when `directory` has fewer than `needed` bytes free."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # not knowable here: the write itself will tell
    if free < needed:
        reason = f"no space left on device (about {size_text(needed)} needed, {size_text(free)} free)"
        raise OSError(errno.ENOSPC, reason, str(path))


@contextmanager
def atomic_writer(path: str | Path, mode: str = "wb", size_hint: int = 0) -> Iterator[IO[Any]]:
    """A temporary file in `path`'s folder, opened with `mode`, that replaces `path` when the block succeeds;
    with `size_hint` (bytes), refused at once when the disk has less free."""
    path = Path(path)
    if size_hint:
        check_free_space(path.parent, size_hint, path)
    fd, tmp = tempfile.mkstemp(prefix=partial_name(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and disk_full(path.parent, e):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    sync_dir(path.parent)


def disk_full(directory: Path, error: BaseException) -> bool:
    """Whether `error`, raised while writing into `directory`, is a full disk (or quota)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(directory).free < NEARLY_FULL
    except OSError:
        return False


def sync_dir(directory: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | Path, text: str) -> None:
    with atomic_writer(path, "w") as f:
        f.write(text)


def remove_partial_writes(directory: str | Path) -> None:
    """Delete the temporary files that writers killed mid-write left in `directory` (the real files are intact).
    Call it only where no other process writes into `directory` (a locked run dir, a locked cache)."""
    for tmp in Path(directory).glob(".*.*.tmp"):
        tmp.unlink(missing_ok=True)


def without_nan(value: Any) -> Any:
    """`value` with every NaN float as None, in dicts and lists too (a bare NaN is not JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """`value` as standard JSON: an undefined number (NaN) as null."""
    return json.dumps(without_nan(value), allow_nan=False, **kwargs)
