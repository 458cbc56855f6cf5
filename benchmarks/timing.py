"""How the benchmark measures: wall time over interleaved warmed-up repeats, and the peak memory of one call.

Time: every contender of a row runs once untimed (warm-up: oneDNN primitives, optimizer state, a
DataLoader's first iterator), then the contenders run in rounds, in forward and reverse order by turns
(A B C, C B A, A B C, ...), so that load from other processes drifts over all of them alike and no
contender always runs first or right after the same other. Each contender's figure is the median of its
rounds. On CUDA the device is synchronised around each call.

Ratio: the median over rounds of the ratio of the two contenders' times in the same round
(`paired_ratio`), with a 95% confidence interval. Pairing cancels the drift that the two calls of a
round share, which a ratio of two medians keeps (see docs/performance.md for how much that
is on a shared machine).

Memory: the peak of one call above what the process held when the call started. On CPU that is the
peak resident set size: Linux resets its high-water mark (VmHWM) to the current RSS when "5" is
written to /proc/self/clear_refs, so the mark after the call minus the RSS before it is what the
call added at its peak (activations, autograd graph, gradients, optimizer state, loader copies). glibc
keeps freed heap memory resident, which would let one contender reuse another's pages unseen, and a
process's first call also sets up process-wide state (thread pools, library caches) that a later
contender would not pay for, so each contender's memory pass runs in a fresh process of its own, with
MALLOC_MMAP_THRESHOLD_ fixed at 64 KiB: every tensor-sized block is then mapped on allocation and
unmapped on free. On CUDA it is torch.cuda.max_memory_allocated minus the allocation at the start
(tensors only, not the cache).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: The environment of the memory pass (see the module docstring).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], Any]], device: torch.device, budget_s: float, min_repeats: int, max_repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each step over rounds (forward and reverse order by turns) after one warm-up round:
    rounds until `budget_s` of them have run, at least `min_repeats` and at most `max_repeats`."""
    for step in steps.values():
        step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    names, rounds, began = list(steps), 0, time.perf_counter()
    while rounds < min_repeats or (rounds < max_repeats and time.perf_counter() - began < budget_s):
        for name in names if rounds % 2 == 0 else reversed(names):
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the median over rounds of numerator[i] / denominator[i] (two contenders' times in
    round i) and a distribution-free 95% confidence interval for it: the ratios of ranks
    floor(n/2 - 0.98 sqrt(n)) and ceil(1 + n/2 + 0.98 sqrt(n)) of n (the normal approximation to
    Binomial(n, 1/2)). For 10 rounds or fewer that is the range of the ratios."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    n = len(ratios)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)  # 0-based index of rank floor(n/2 - half)
    high = min(n - 1, math.ceil(n / 2 + half))  # 0-based index of rank ceil(n/2 + half) + 1
    return statistics.median(ratios), ratios[low], ratios[high]


def format_ratio(ratio: tuple[float, float, float], digits: int, unit: str = "") -> str:
    """ "1.61x (1.58-1.64)": a `paired_ratio` and its 95% interval."""
    mid, low, high = ratio
    return f"{mid:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


def _kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def peak_rss_supported() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _kib("VmHWM")
        return True
    except (OSError, AttributeError):
        return False


def peak_memory_mib(step: Callable[[], Any], device: torch.device) -> float | None:
    """MiB that one call of `step` added at its peak (see the module docstring); None where not measurable."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not peak_rss_supported():
        return None
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = _kib("VmRSS")
    step()
    return (_kib("VmHWM") - before) / 1024


def on_off_arguments(doc: str, out: Path, argv: list[str] | None, device: bool = False) -> argparse.Namespace:
    """The command line of an on/off comparison (benchmarks.fusion, benchmarks.amp): --threads, --quick | --smoke,
    --out [, --device]. Sets the threads; adds `sizes` ((px, channels) of the rows) and `budget` (s per row)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    if device:
        parser.add_argument("--device", default="cpu")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="28 px only, short budgets")
    group.add_argument("--smoke", action="store_true", help="tiny shapes, one round (for the tests)")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sizes = [(16, 1)] if args.smoke else [(28, 1)] if args.quick else [(28, 1), (84, 3)]
    args.budget = 0.0 if args.smoke else 3.0 if args.quick else 20.0
    return args
