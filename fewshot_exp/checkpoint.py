"""Checkpoints: written atomically, read safely.

A checkpoint is a dict of tensors and plain Python values. It is written to a temporary file in
the same directory, fsynced and moved over the old one with `os.replace`, so a crash or a full
disk mid-write never leaves a half-written file under the real name. It is read with
`torch.load(weights_only=True)`, which never executes pickled code; any file that is not a
fewshot-exp checkpoint gives a one-line UserError naming the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fewshot_exp.errors import UserError

FORMAT = "fewshot-exp-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_partial_writes(directory: str | Path) -> None:
    """Delete temporary files a killed process left behind mid-write (the real checkpoints are intact)."""
    for tmp in Path(directory).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def checkpoint_path(value: str, key: str) -> Path:
    """`value` as a checkpoint file: a .pt file, or a run dir's best.pt; a UserError naming `key` otherwise."""
    path = Path(value)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise UserError(f"{key}={value}: no such file{' (the run dir has no best.pt)' if Path(value).is_dir() else ''}")
    return path


#: What a training run's last.pt holds, all of it needed to resume (best.pt holds the same).
RESUME_KEYS = ("algorithm", "optimizer", "scheduler", "progress", "rng", "wandb_run_id", "config")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", needs: tuple[str, ...] = ("algorithm",)
) -> dict[str, Any]:
    """The state saved at `path`; a UserError naming the file if it is unreadable, not ours, or lacks `needs`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupted, or a pickle that weights_only refuses
        raise UserError(
            f"checkpoint {path} is unreadable or not a safe tensor checkpoint ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a fewshot-exp checkpoint (no '{FORMAT}' marker)")
    missing = [key for key in needs if key not in state]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete: it has no {', '.join(repr(k) for k in missing)}")
    return state
