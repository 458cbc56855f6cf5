"""What huge pages (fewshot_exp/allocator.py) change: our steps with THP_MEM_ALLOC_ENABLE=1 and =0.

    python benchmarks/allocator.py [--rounds 3] [--threads N] [--quick]

PyTorch reads the setting once per process, so each measurement is a fresh subprocess: per round and
workload, one process with huge pages and one without, alternating (so load from other processes
drifts over both alike). A process builds the step (benchmarks/ours.py, the code `benchmarks.run` times),
runs it once untimed, then times `--calls` calls and reports the fastest. The figure per setting is the
median over rounds; the ratio is without / with, in this one run. The peers of `benchmarks.run` run in
its process with the same setting as ours, so their ratios are about code only; this one is about the
allocator setting the command line turns on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: workload -> what it times (at --size px, --channels channels)
WORKLOADS = {
    "protonet-train": "ProtoNet training step (5-way 5-shot 15-query)",
    "protonet-eval": "ProtoNet evaluation, 8 episodes",
    "maml-2nd-order": "second-order MAML meta-step, 1 task, 1 inner step",
    "maml-1st-order": "first-order MAML meta-step, 1 task, 1 inner step",
}


def child(workload: str, size: int, channels: int, calls: int, threads: int | None) -> float:
    """Seconds of the fastest of `calls` calls of the workload's step, in this process."""
    import torch

    from benchmarks import ours
    from benchmarks.cases import Shape

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    if workload == "protonet-train":
        step = ours.protonet_train(Shape(size, channels), device)
    elif workload == "protonet-eval":
        step = ours.protonet_eval(Shape(size, channels, episodes=8), device)
    else:
        step = ours.maml_train(Shape(size, channels), device, first_order=workload == "maml-1st-order")
    step()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(workload: str, huge_pages: bool, args: argparse.Namespace) -> float:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", workload, "--size", str(args.size)]
    command += ["--channels", str(args.channels), "--calls", str(args.calls)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0", "PYTHONPATH": str(REPO)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per process (the fastest counts)")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "allocator.json")
    parser.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(child(args.child, args.size, args.channels, args.calls, args.threads))
        return
    from tabulate import tabulate

    seconds: dict[str, dict[str, list[float]]] = {w: {"on": [], "off": []} for w in args.workloads}
    for _ in range(args.rounds):
        for workload in args.workloads:
            for setting in ("on", "off"):
                seconds[workload][setting].append(measure(workload, setting == "on", args))
    rows = []
    for workload, by_setting in seconds.items():
        on, off = (statistics.median(by_setting[s]) for s in ("on", "off"))
        rows.append(
            {
                "workload": workload,
                "what": WORKLOADS[workload],
                "ms huge pages": on * 1e3,
                "ms default": off * 1e3,
                "speed-up": off / on,
                "seconds": by_setting,
            }
        )
    print(f"{args.size} px, {args.channels} channel(s), threads {args.threads or 'default'}, {args.rounds} rounds")
    print(tabulate([{k: v for k, v in r.items() if k != "seconds"} for r in rows], headers="keys", floatfmt=".2f"))
    result = {
        "size": args.size,
        "channels": args.channels,
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
