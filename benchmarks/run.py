"""Benchmark our training step, evaluation and MAML meta-step against our encoder-only limit and the peers.

    python -m benchmarks.run [--quick | --smoke] [--threads 2] [--rows protonet-train ...] [--out results.json]

Prints a table (ms/episode, episodes/s, peak MiB, speed against the peer and against the limit) and writes
it as JSON. Every row's contenders are timed in this process, interleaved (benchmarks/timing.py); the
ratios are medians of per-round ratios with a 95% interval; each contender's peak memory comes from a
fresh subprocess of its own. `--quick` runs every row at 28 px with short budgets,
`--smoke` tiny shapes (for the tests; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from benchmarks import ours, peers
from benchmarks.cases import Contender, Row, Shape
from benchmarks.provenance import hardware, record
from benchmarks.timing import MEMORY_ENV, format_ratio, interleaved_times, median, paired_ratio, peak_memory_mib

REPO = Path(__file__).resolve().parents[1]

# mode -> (28 px / 84 px ProtoNet shapes, MAML shape, eval episodes per call at 28 / 84 px, seconds per row,
# the large meta-batch MAML row's (px, channels, tasks): the shape of the GPU target, vmap over tasks on CUDA)
MODES = {
    "full": {"sizes": [(28, 1), (84, 3)], "maml": (84, 3), "episodes": {28: 80, 84: 8}, "budget": 1.0},
    "quick": {"sizes": [(28, 1)], "maml": (28, 1), "episodes": {28: 40}, "budget": 0.3},
    "smoke": {"sizes": [(16, 1)], "maml": (16, 1), "episodes": {16: 4}, "budget": 0.0},
}
META_BATCH = {"full": (28, 1, 32), "quick": (28, 1, 8), "smoke": (16, 1, 3)}
SMOKE = {"way": 3, "shot": 1, "query": 2, "hidden": 8}


def rows(mode: str, device: torch.device) -> list[Row]:
    """The benchmark's rows for `mode`; a peer that does not import is a skipped contender."""
    settings = MODES[mode]
    small = SMOKE if mode == "smoke" else {}
    easyfsl_missing, higher_missing = peers.missing("easyfsl"), peers.missing("higher")
    out = []
    for size, channels in settings["sizes"]:
        shape = Shape(size, channels, **small)
        images = shape.images_per_task
        out.append(
            Row(
                f"protonet-train-{size}px",
                "ProtoNet training step: our sampler + training_step vs easyfsl TaskSampler/DataLoader + Adam",
                shape,
                1,
                [
                    Contender("ours", partial(ours.protonet_train, shape, device), "ours"),
                    Contender("encoder limit", partial(ours.limit_train, shape, device, images), "limit"),
                    peer("easyfsl", partial(peers.easyfsl_train, shape, device), easyfsl_missing),
                ],
            )
        )
    for size, channels in settings["sizes"]:
        shape = Shape(size, channels, episodes=settings["episodes"][size], **small)
        if mode == "smoke":
            shape = replace(shape, batch_images=2 * shape.images_per_task)
        out.append(
            Row(
                f"protonet-eval-{size}px",
                f"ProtoNet evaluation of {shape.episodes} episodes: evaluate() (eval.batch_images="
                f"{shape.batch_images}) vs easyfsl.utils.evaluate (one episode per forward)",
                shape,
                shape.episodes,
                [
                    Contender("ours", partial(ours.protonet_eval, shape, device), "ours"),
                    Contender("encoder limit", partial(ours.limit_eval, shape, device), "limit"),
                    peer("easyfsl", partial(peers.easyfsl_eval, shape, device), easyfsl_missing),
                ],
            )
        )
    size, channels = settings["maml"]
    for steps in (1, 5):
        shape = Shape(size, channels, tasks=2 if mode == "smoke" else 4, inner_steps=steps, **small)
        out.append(maml_row(f"maml-{steps}step-{size}px", shape, device, higher_missing))
    size, channels, tasks = META_BATCH[mode]
    shape = Shape(size, channels, tasks=tasks, **small)
    out.append(maml_row(f"maml-{tasks}tasks-{size}px", shape, device, higher_missing))
    return out


def maml_row(name: str, shape: Shape, device: torch.device, higher_missing: str | None) -> Row:
    """A MAML meta-step row: ours second and first order, the encoder limit on all tasks' images, and higher."""
    return Row(
        name,
        f"MAML meta-step, {shape.tasks} tasks, {shape.inner_steps} inner step(s): training_step vs "
        "higher.innerloop_ctx",
        shape,
        shape.tasks,
        [
            Contender("ours 2nd order", partial(ours.maml_train, shape, device, False), "ours"),
            Contender("ours 1st order", partial(ours.maml_train, shape, device, True), "ours"),
            Contender(
                "encoder limit", partial(ours.limit_train, shape, device, shape.tasks * shape.images_per_task), "limit"
            ),
            peer("higher 2nd order", partial(peers.higher_maml_train, shape, device), higher_missing),
        ],
    )


def peer(label: str, factory: Any, missing: str | None) -> Contender:
    return Contender(label, None if missing else factory, "peer", skipped=missing)


def row_budget(row: Row, mode: str) -> tuple[float, int, int]:
    """(seconds of timed rounds, min rounds, max rounds) for a row."""
    scale = MODES[mode]["budget"]
    if mode == "smoke":
        return 0.0, 1, 1
    if row.name.startswith("maml"):  # the costliest rounds on CPU (4 contenders of a whole meta-batch each)
        return 30.0 * scale, 2 if row.name.startswith("maml-5") and mode == "full" else 3, 25
    if row.shape.size >= 84:  # rounds of seconds
        return 40.0 * scale, 5, 25
    # 28 px rows: a 28 px step's overhead over the limit (a few %) is as small as timing noise, so these cheap
    # rows get more rounds (a training round is a fraction of a second; an evaluation round takes seconds: at least 5)
    return 20.0 * scale, 5 if mode == "full" else 3, 100


def time_row(row: Row, mode: str, device: torch.device) -> dict[str, list[float]]:
    steps = {c.label: c.factory() for c in row.contenders if c.factory is not None}
    return interleaved_times(steps, device, *row_budget(row, mode))


def memory_pass(row_name: str, label: str, mode: str, device: torch.device) -> float | None:
    """In this (fresh) process: one call of one contender of the row, its peak MiB above the RSS before it."""
    (row,) = [r for r in rows(mode, device) if r.name == row_name]
    (contender,) = [c for c in row.contenders if c.label == label]
    return peak_memory_mib(contender.factory(), device)


def memory_of_row(row: Row, args: argparse.Namespace) -> dict[str, float | None]:
    """Run memory_pass for each contender of `row` in a fresh subprocess of its own (see benchmarks/timing.py
    for why): the first call of a process also sets up process-wide state (thread pools, library caches),
    which a contender measured after another would not pay."""
    memory = {}
    for c in row.contenders:
        if c.factory is None:
            continue
        command = [sys.executable, "-m", "benchmarks.run", "--memory-pass", row.name, "--contender", c.label]
        command += ["--mode-name", args.mode, "--device", args.device]
        command += ["--threads", str(args.threads)] if args.threads else []
        env = {**os.environ, **MEMORY_ENV}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory pass of {row.name}, {c.label} failed:\n{done.stderr[-2000:]}")
        memory[c.label] = json.loads(done.stdout.strip().splitlines()[-1])
    return memory


def summarise(row: Row, times: dict[str, list[float]], memory: dict[str, float | None]) -> dict[str, Any]:
    """The row's JSON: per contender its times, ms/episode, episodes/s and peak MiB; then the ratios."""
    contenders: dict[str, Any] = {}
    for c in row.contenders:
        if c.factory is None:
            contenders[c.label] = {"role": c.role, "skipped": c.skipped}
            continue
        seconds = median(times[c.label])
        contenders[c.label] = {
            "role": c.role,
            "ms_per_call": 1000 * seconds,
            "ms_per_episode": 1000 * seconds / row.episodes_per_call,
            "episodes_per_s": row.episodes_per_call / seconds,
            "peak_mib": memory.get(c.label),
            "repeats": len(times[c.label]),
            "times_ms": [round(1000 * t, 3) for t in times[c.label]],
        }
    timed = {k: v for k, v in contenders.items() if "skipped" not in v}
    limit = next((k for k, v in timed.items() if v["role"] == "limit"), None)
    peer_ = next((k for k, v in timed.items() if v["role"] == "peer"), None)
    for label, v in timed.items():  # paired per-round ratios (benchmarks/timing.py), with their 95% interval
        if peer_ and label != peer_:
            v["speed_vs_peer"] = paired_ratio(times[peer_], times[label])
        if limit and label != limit:
            v["time_vs_limit"] = paired_ratio(times[label], times[limit])
    ratios, intervals = {}, {}
    for label, v in timed.items():
        if v["role"] != "ours":
            continue
        paired = {"speed_vs_peer": f"{label} speed-up over peer", "time_vs_limit": f"{label} time / encoder limit's"}
        for field_, key in paired.items():
            if field_ in v:
                ratios[key], low, high = v[field_]
                intervals[key] = [low, high]
        if peer_ and v["peak_mib"] and timed[peer_]["peak_mib"]:
            ratios[f"{label} peak memory / peer's"] = v["peak_mib"] / timed[peer_]["peak_mib"]
    return {
        "name": row.name,
        "what": row.what,
        "shape": asdict(row.shape),
        "episodes_per_call": row.episodes_per_call,
        "contenders": contenders,
        "ratios": ratios,
        "ratio_intervals_95": intervals,
    }


def interval(v: dict[str, Any], field_: str, role: str, digits: int, unit: str = "") -> str:
    """ "1.61x (1.58-1.64)": a contender's paired ratio `field_` and its 95% interval; 1 for the reference
    (`role`) itself; "" where the row has no such reference."""
    if v["role"] == role:
        return f"{1:.{digits}f}{unit}"
    return format_ratio(v[field_], digits, unit) if field_ in v else ""


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for row in results:
        for label, v in row["contenders"].items():
            if "skipped" in v:
                lines.append([row["name"], label, "skipped", "", "", "", ""])
                continue
            mib = v["peak_mib"]
            lines.append(
                [
                    row["name"],
                    label,
                    f"{v['ms_per_episode']:.2f}",
                    f"{v['episodes_per_s']:.2f}",
                    "n/a" if mib is None else f"{mib:.0f}",
                    interval(v, "speed_vs_peer", "peer", 2, "x"),
                    interval(v, "time_vs_limit", "limit", 3),
                ]
            )
    headers = ["row", "contender", "ms/episode", "episodes/s", "peak MiB", "speed vs peer", "time / limit"]
    return tabulate(lines, headers=headers, disable_numparse=True) + (
        "\nspeed vs peer, time / limit: median over rounds of the per-round ratio (95% interval)"
    )


def machine(device: torch.device) -> dict[str, Any]:
    """The hardware (benchmarks/provenance.py), the huge-pages setting every contender ran with, and the peers."""
    return {
        **hardware(str(device)),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),  # every contender's, ours and the peers'
        "peers": {name: peers.missing(name) or "installed" for name in ("easyfsl", "higher")},
        "peer_versions": {name: package_version(name) for name in ("easyfsl", "higher")},
    }


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="every row at 28 px, short budgets")
    group.add_argument("--smoke", action="store_true", help="tiny shapes, one round (for the tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rows", nargs="*", default=None, help="only rows whose name contains one of these")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--memory-pass", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--mode-name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.mode = args.mode_name or ("smoke" if args.smoke else "quick" if args.quick else "full")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as `python -m fewshot_exp` runs (for every contender)
    if args.memory_pass:
        print(json.dumps(memory_pass(args.memory_pass, args.contender, args.mode, device)))
        return
    selected = [r for r in rows(args.mode, device) if not args.rows or any(s in r.name for s in args.rows)]
    report = {
        "mode": args.mode,
        "device": str(device),
        **record("benchmarks.run", sys.argv[1:] if argv is None else argv, machine(device)),
        "load_average_before": os.getloadavg(),
        "rows": [],
    }
    print(
        f"{args.mode} benchmark on {device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')} for every contender"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for row in selected:
        memory = {} if args.no_memory else memory_of_row(row, args)
        report["rows"].append(summarise(row, time_row(row, args.mode, device), memory))
        report["load_average_after"] = os.getloadavg()
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every row: a long run keeps what it did
        print(f"  {row.name} done", flush=True)
    print(table(report["rows"]))
    print(f"load average before {report['load_average_before'][0]:.2f}, after {report['load_average_after'][0]:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
