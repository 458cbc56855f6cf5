"""How much memory a device has, and whether a dataset's images fit in it before they are loaded."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fewshot_exp.errors import UserError

CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v2, v1


def device_memory(device: torch.device) -> int:
    """Total bytes of the device's memory: the GPU's, or the machine's physical RAM capped by a container's
    cgroup memory limit."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in CGROUP_LIMITS:
        try:
            limits.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # no such file, or "max"
            pass
    return min(limits)


def check_images_fit(count: int, channels: int, size: int, what: str) -> None:
    """A UserError before loading when `count` uint8 images of channels x size x size, held twice while they are
    stacked, need more than the machine's memory."""
    need = 2 * count * channels * size * size
    have = device_memory(torch.device("cpu"))
    if need > have:
        raise UserError(
            f"{what}: {count} images of {channels}x{size}x{size} need about {need / 2**30:.1f} GiB of memory to "
            f"load, more than the machine's {have / 2**30:.1f} GiB; lower dataset.image_size"
        )
