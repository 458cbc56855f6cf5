"""What decides a run's numbers besides its config: the code (version, git commit), torch, the device and the
exact images (a hash of the loaded splits). Written to results.json and the W&B config as `provenance`."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from fewshot_exp.data.imageset import ImageSet, Splits

PACKAGE_DIR = Path(__file__).resolve().parent


def version() -> str | None:
    try:
        return metadata.version("fewshot-exp")
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, with `+dirty` for uncommitted changes to tracked files;
    None for an installed copy (a wheel in site-packages, even inside some other repository)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != PACKAGE_DIR.parent:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def dataset_hash(splits: Splits) -> str:
    """SHA-256 (first 16 hex digits) of every split's pixels, labels and class names, in split order."""
    digest = hashlib.sha256()
    for split in (splits.train, splits.val, splits.test):
        update(digest, split)
    return digest.hexdigest()[:16]


def update(digest: Any, split: ImageSet) -> None:
    digest.update(str(tuple(split.images.shape)).encode())
    digest.update(memoryview(split.images.detach().cpu().contiguous().numpy()).cast("B"))
    digest.update(memoryview(split.labels.detach().cpu().contiguous().numpy()).cast("B"))
    digest.update("\n".join(split.class_names).encode())


def device_name(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def provenance(splits: Splits, device: torch.device) -> dict[str, Any]:
    return {
        "fewshot_exp": version(),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": device_name(device),
        "dataset_hash": dataset_hash(splits),
    }
