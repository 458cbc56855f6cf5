"""A run stopped by SIGINT or SIGTERM outside the training loop (start-up, data loading, the final test, writing
results) ends with one line, a resume hint where a checkpoint is kept, and exit status 128 + the signal.

The training loop catches these signals itself, checkpoints and raises `train.Interrupted` (fewshot_exp/train.py).
Elsewhere, SIGINT is Python's KeyboardInterrupt and SIGTERM is raised as `Stopped` (`install`, main thread only);
`message` words the line from the phase the run was in (`enter`) and its run dir.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

phase = "start-up"
run_dir: Path | None = None


class Stopped(BaseException):  # like KeyboardInterrupt: not caught by `except Exception`
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def enter(name: str, directory: Path | None = None) -> None:
    """Record the phase the run is in (and its run dir, once known) for the stop message."""
    global phase, run_dir
    phase = name
    if directory is not None:
        run_dir = directory


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def install() -> Any:
    """SIGTERM raises Stopped (in the main thread; elsewhere the default stays); returns the handler it replaced,
    for `restore`."""
    try:
        return signal.signal(signal.SIGTERM, _raise_stopped)
    except ValueError:
        return None


def restore(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def exit_status(signum: int) -> int:
    return 128 + signum


def message(signum: int) -> str:
    """ "stopped by SIGTERM during the final test; continue with resume=<dir>" (or what else to do)."""
    text = f"stopped by {signal.Signals(signum).name} during {phase}"
    if run_dir is not None and (run_dir / "last.pt").is_file():
        return f"{text}; its last checkpoint is kept: continue with resume={run_dir}"
    if run_dir is not None and (run_dir / "results.json").is_file():
        return f"{text}; the run had finished: its results are in {run_dir}"
    return f"{text}; nothing to resume yet: run the command again"
