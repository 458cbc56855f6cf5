"""Huge pages (fewshot_exp/allocator.py) on and off, for our steps and the peers' same steps.

    python -m benchmarks.allocator [--rounds 3] [--threads N] [--size 84 --channels 3]

PyTorch reads THP_MEM_ALLOC_ENABLE once per process, so each measurement is a fresh subprocess: per
round, every contender runs once with huge pages and once without, all interleaved (load from other
processes drifts over all of them alike). A process builds one step (benchmarks/ours.py and
benchmarks/peers.py, the code `benchmarks.run` times), runs it once untimed, then times `--calls` calls
and reports the fastest; a contender's figure is the median over rounds. Per workload it prints, from
this one run:

- ours: huge pages' speed-up of our step (off / on);
- same setting: the peer's time over ours, both with huge pages (what `benchmarks.run` measures, code only);
- as shipped: the peer with PyTorch's default allocator over ours with huge pages, i.e. `python -m
  fewshot_exp` against a peer's script run as is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: workload -> (what it times, our contender, the peer's contender, the peer's package); 5-way 5-shot 15-query
WORKLOADS = {
    "protonet-train": ("ProtoNet training step", "ours-protonet-train", "easyfsl-train", "easyfsl"),
    "protonet-eval": ("ProtoNet evaluation, 8 episodes", "ours-protonet-eval", "easyfsl-eval", "easyfsl"),
    "maml-2nd-order": (
        "second-order MAML meta-step, 1 task, 1 inner step",
        "ours-maml-2nd",
        "higher-maml-2nd",
        "higher",
    ),
}


def build(contender: str, size: int, channels: int) -> Callable[[], Any]:
    import torch

    from benchmarks import ours, peers
    from benchmarks.cases import Shape

    cpu, shape = torch.device("cpu"), Shape(size, channels, episodes=8)
    return {
        "ours-protonet-train": lambda: ours.protonet_train(shape, cpu),
        "easyfsl-train": lambda: peers.easyfsl_train(shape, cpu),
        "ours-protonet-eval": lambda: ours.protonet_eval(shape, cpu),
        "easyfsl-eval": lambda: peers.easyfsl_eval(shape, cpu),
        "ours-maml-2nd": lambda: ours.maml_train(shape, cpu, first_order=False),
        "higher-maml-2nd": lambda: peers.higher_maml_train(shape, cpu),
    }[contender]()


def child(contender: str, size: int, channels: int, calls: int, threads: int | None) -> float:
    """Seconds of the fastest of `calls` calls of the contender's step, in this process."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    step = build(contender, size, channels)
    step()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(contender: str, huge_pages: bool, args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "benchmarks.allocator", "--child", contender, "--size", str(args.size)]
    command += ["--channels", str(args.channels), "--calls", str(args.calls)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0", "PYTHONPATH": str(REPO)}
    out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def summary(workload: str, seconds: dict[str, dict[str, list[float]]], peer_missing: str | None) -> dict:
    what, mine, theirs, _ = WORKLOADS[workload]
    ms = {(c, s): statistics.median(seconds[c][s]) * 1e3 for c in seconds for s in ("on", "off")}
    row = {
        "workload": workload,
        "what": what,
        "ours ms (huge pages)": ms[mine, "on"],
        "ours ms (default)": ms[mine, "off"],
        "ours: huge pages speed-up": ms[mine, "off"] / ms[mine, "on"],
    }
    if peer_missing:
        return {**row, "peer": f"skipped: {peer_missing}"}
    return {
        **row,
        "peer": theirs,
        "peer ms (huge pages)": ms[theirs, "on"],
        "peer ms (default)": ms[theirs, "off"],
        "speed-up over peer, same setting": ms[theirs, "on"] / ms[mine, "on"],
        "speed-up over peer, as shipped": ms[theirs, "off"] / ms[mine, "on"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per process (the fastest counts)")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "allocator.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(child(args.child, args.size, args.channels, args.calls, args.threads))
        return
    from tabulate import tabulate

    from benchmarks.peers import missing
    from benchmarks.provenance import hardware, record

    absent = {w: missing(WORKLOADS[w][3]) for w in args.workloads}
    contenders = [c for w in args.workloads for c in WORKLOADS[w][1:3] if not (c == WORKLOADS[w][2] and absent[w])]
    machine = hardware("cpu") | ({"threads": args.threads} if args.threads else {})  # the children's threads
    provenance = record("benchmarks.allocator", sys.argv[1:] if argv is None else argv, machine)
    load_before = os.getloadavg()
    seconds = {c: {"on": [], "off": []} for c in contenders}
    for _ in range(args.rounds):
        for contender in contenders:
            for setting in ("on", "off"):
                seconds[contender][setting].append(measure(contender, setting == "on", args))
    rows = [summary(w, seconds, absent[w]) for w in args.workloads]
    print(
        f"{args.size} px, {args.channels} channel(s), threads {args.threads or 'default'}, {args.rounds} rounds, "
        f"load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(tabulate([{k: v for k, v in r.items() if k != "what"} for r in rows], headers="keys", floatfmt=".2f"))
    result = {
        **provenance,
        "size": args.size,
        "channels": args.channels,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
        "seconds": seconds,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
