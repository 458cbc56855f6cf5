"""`train.amp` (bf16 autocast of the training forward) off and on, timed in one process, interleaved
(benchmarks/timing.py), on the device given.

    python -m benchmarks.amp [--threads 2] [--device cpu|cuda] [--quick | --smoke] [--out benchmarks/amp.json]

Rows: the ProtoNet training step as the loop runs it (benchmarks/ours.py) at 28 px and 84 px, and the
second-order and first-order MAML meta-steps (meta-batch 4, 1 inner step). bf16 is fast only on hardware with
bf16 arithmetic (CUDA GPUs from Ampere on; x86 CPUs with AVX512-BF16 or AMX): the JSON records the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import torch
from tabulate import tabulate

from benchmarks import ours
from benchmarks.cases import Shape
from benchmarks.provenance import bf16_flags, hardware, record
from benchmarks.run import SMOKE
from benchmarks.timing import format_ratio, interleaved_times, median, on_off_arguments, paired_ratio

REPO = Path(__file__).resolve().parents[1]


def workloads(args: argparse.Namespace) -> list[tuple[str, partial]]:
    small, sizes = SMOKE if args.smoke else {}, args.sizes
    out = [(f"ProtoNet training step {s} px", partial(ours.protonet_train, Shape(s, c, **small))) for s, c in sizes]
    s, c = sizes[-1]
    maml = Shape(s, c, tasks=4, **small)
    for order, first in (("2nd", False), ("1st", True)):
        out.append((f"MAML {order}-order meta-step {s} px, 4 tasks", partial(ours.maml_train, maml, first_order=first)))
    return out


def main(argv: list[str] | None = None) -> None:
    args = on_off_arguments(__doc__, REPO / "benchmarks" / "amp.json", argv, device=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")
    device, budget = torch.device(args.device), args.budget
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as `python -m fewshot_exp` runs
    provenance = record("benchmarks.amp", sys.argv[1:] if argv is None else argv, hardware(args.device))
    load = os.getloadavg()
    report = {**provenance, "load_before": load, "device": str(device), "threads": torch.get_num_threads()}
    report |= {"cpu_bf16_flags": bf16_flags(), "rows": {}}
    table = []
    for name, factory in workloads(args):
        steps = {"float32": factory(device, amp=False), "bf16 autocast": factory(device, amp=True)}
        times = interleaved_times(steps, device, budget, 3, 50)
        fp32, bf16 = median(times["float32"]), median(times["bf16 autocast"])
        speed_up = format_ratio(paired_ratio(times["float32"], times["bf16 autocast"]), 2, "x")
        table.append([name, f"{1000 * fp32:.1f}", f"{1000 * bf16:.1f}", speed_up])
        report["rows"][name] = {label: [round(1000 * t, 3) for t in ts] for label, ts in times.items()}
    report["load_after"] = os.getloadavg()
    headers = ["workload", "float32 (ms)", "bf16 autocast (ms)", "speed-up (95% interval)"]
    print(tabulate(table, headers=headers, disable_numparse=True))
    flags = ", ".join(report["cpu_bf16_flags"]) or "none"
    after = report["load_after"][0]
    print(f"{device}, {torch.get_num_threads()} threads, CPU bf16 flags: {flags}, load {load[0]:.2f} -> {after:.2f}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
