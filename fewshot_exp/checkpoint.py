"""Checkpoints: written atomically, read safely.

A checkpoint is a dict of tensors and plain Python values. It is written with `files.atomic_writer`
(a temporary file, fsynced, moved over the old one), so a crash or a full disk mid-write never leaves a
half-written file under the real name, and a disk without room for it is reported before writing. It is read with
`torch.load(weights_only=True)`, which never executes pickled code; any file that is not a
fewshot-exp checkpoint gives a one-line UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fewshot_exp.errors import UserError
from fewshot_exp.files import atomic_writer

FORMAT = "fewshot-exp-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`state` to `path` atomically (fewshot_exp/files.py), refused before writing when the disk cannot hold it."""
    with atomic_writer(path, "wb", size_hint=state_bytes(state)) as f:
        torch.save({"format": FORMAT, **state}, f)


def state_bytes(state: Any) -> int:
    """The bytes of the tensors in `state` (nested dicts and lists too): about a checkpoint's size on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


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
