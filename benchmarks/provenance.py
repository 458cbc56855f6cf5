"""Where a measurement comes from: the commit, the date, the machine and the command.

Every benchmark's JSON carries these fields (`record`), and so does each run dir of `benchmarks.results_page`;
the docs pages print them above each table. The commit is `git rev-parse --short HEAD` (None outside a git
checkout), with `uncommitted_changes` true where tracked files differ from it.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str | None:
    """The output of `git <args>` in the repository, None where git or the checkout is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def commit() -> str | None:
    return git("rev-parse", "--short", "HEAD") or None


def uncommitted_changes() -> bool | None:
    """Whether tracked files differ from the commit (untracked files aside); None without git."""
    status = git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


def cpuinfo() -> str:
    """The text of /proc/cpuinfo ("" where there is no such file)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    names = [line.split(":", 1)[1].strip() for line in cpuinfo().splitlines() if line.startswith("model name")]
    return names[0] if names else platform.processor()


def bf16_flags() -> list[str]:
    """The CPU's bf16-related flags (empty where there is none, or no /proc/cpuinfo)."""
    return sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|amx_tile)\b", cpuinfo())))


def device_name(device: str) -> str:
    """ "cpu", or "cuda (<GPU name>)" for a CUDA device."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return str(device)


def hardware(device: str = "cpu") -> dict[str, Any]:
    """CPU model, core count, torch's intra-op threads, torch and Python versions, and the device."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
    }


def command(program: str, argv: list[str]) -> str:
    """The command line as a user types it: `python -m <module> <args>` or `python <script> <args>`."""
    runner = "python" if program.endswith(".py") else "python -m"
    return " ".join([runner, program, *map(shlex.quote, argv)])


def record(program: str, argv: list[str], machine: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields of a benchmark's JSON: commit, uncommitted_changes, started, command, machine."""
    return {
        "commit": commit(),
        "uncommitted_changes": uncommitted_changes(),
        "started": now(),
        "command": command(program, argv),
        "machine": machine,
    }


# ---- as the docs pages print them

NOT_RECORDED = "not recorded"


def commit_text(fields: dict[str, Any]) -> str:
    """ "`abc1234`", "`abc1234` + uncommitted changes", or "not recorded"."""
    sha = fields.get("commit")
    if not sha:
        return NOT_RECORDED
    return f"`{sha}`" + (" + uncommitted changes" if fields.get("uncommitted_changes") else "")


def threads_text(threads: Any) -> str:
    if threads is None:
        return "torch's default threads"
    return f"threads {NOT_RECORDED}" if threads == NOT_RECORDED else f"{threads} threads"


def hardware_text(machine: dict[str, Any], threads: Any = NOT_RECORDED, device: str | None = None) -> str:
    """ "CPU, N cores, T threads, torch V, device D", each field "not recorded" where `machine` lacks it; `threads`
    and `device` stand in for fields that `machine` lacks (None threads: torch's default)."""
    cores = machine.get("cores")
    parts = [
        machine.get("cpu") or f"CPU {NOT_RECORDED}",
        f"{cores} cores" if cores else f"cores {NOT_RECORDED}",
        threads_text(machine.get("threads", threads)),
        f"torch {machine['torch']}" if machine.get("torch") else f"torch {NOT_RECORDED}",
        f"device {machine.get('device') or device or NOT_RECORDED}",
    ]
    return ", ".join(parts)


def duration(seconds: float | None) -> str:
    """ "45 s", "3 min 37 s", "1 h 02 min"."""
    if seconds is None:
        return NOT_RECORDED
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
