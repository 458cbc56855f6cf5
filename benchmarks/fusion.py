"""The two layout/fusion defaults on and off, timed in one process, interleaved (benchmarks/timing.py).

    python -m benchmarks.fusion [--threads 2] [--quick | --smoke] [--out benchmarks/fusion.json]

- Conv-4 training step (forward, backward, Adam) on 5-way 5-shot 15-query images, with `fuse_norm_pool` on (BN,
  max-pool and ReLU as one function, fewshot_exp/encoders/norm_pool.py) and off (the modules' own kernels), both
  channels_last.
- Second-order MAML meta-step (1 task; 1 and 5 inner steps) with the channels_last encoder, whose TaskBatchNorm runs
  as batch norm of [N*H*W, C] rows with the short double backward of fewshot_exp/encoders/task_batch_norm.py, and
  with an NCHW encoder and plain F.batch_norm (`TaskBatchNorm(fast=False)`, the textbook reference).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from benchmarks import ours
from benchmarks.cases import Shape
from benchmarks.provenance import hardware, record
from benchmarks.run import SMOKE
from benchmarks.timing import format_ratio, interleaved_times, median, on_off_arguments, paired_ratio
from fewshot_exp.algorithms.maml import MAML, TaskBatchNorm
from fewshot_exp.distances import Distance

REPO = Path(__file__).resolve().parents[1]


def maml_second_order(shape: Shape, fast: bool) -> object:
    encoder = ours.encoder(shape, channels_last=fast)
    algorithm = MAML(encoder, Distance("l2"), inner_steps=shape.inner_steps, n_way=shape.way, image_size=shape.size)
    for norm in algorithm.modules():
        if isinstance(norm, TaskBatchNorm):
            norm.fast = fast
    return ours.train_loop_step(algorithm, shape, torch.device("cpu"))


def main(argv: list[str] | None = None) -> None:
    args = on_off_arguments(__doc__, REPO / "benchmarks" / "fusion.json", argv)
    sizes, budget = args.sizes, args.budget
    small = SMOKE if args.smoke else {}
    provenance = record("benchmarks.fusion", sys.argv[1:] if argv is None else argv, hardware("cpu"))
    rows, load = [], os.getloadavg()
    for size, channels in sizes:
        shape = Shape(size, channels, **small)
        images, cpu = shape.images_per_task, torch.device("cpu")
        steps = {
            "fused": ours.limit_train(shape, cpu, images),
            "unfused": ours.limit_train(shape, cpu, images, fuse_norm_pool=False),
        }
        rows.append((f"Conv-4 training step {size} px", interleaved_times(steps, torch.device("cpu"), budget, 3, 25)))
    size, channels = sizes[-1]
    for inner_steps in (1, 5):
        shape = Shape(size, channels, tasks=1, inner_steps=inner_steps, **small)
        steps = {"channels_last, BN rows, short 2nd backward": maml_second_order(shape, True)}
        steps["NCHW, F.batch_norm"] = maml_second_order(shape, False)
        name = f"2nd-order MAML meta-step {size} px, {inner_steps} step(s)"
        rows.append((name, interleaved_times(steps, torch.device("cpu"), budget, 3, 10)))

    table, report = [], {**provenance, "load_before": load, "threads": torch.get_num_threads(), "rows": {}}
    for name, times in rows:  # each: the default, then the reference it is timed against
        (new, new_t), (old, old_t) = times.items()
        table.append([name, f"{new}: {1000 * median(new_t):.1f}", f"{old}: {1000 * median(old_t):.1f}",
                      format_ratio(paired_ratio(old_t, new_t), 2, "x")])  # fmt: skip
        report["rows"][name] = {label: [round(1000 * t, 3) for t in ts] for label, ts in times.items()}
    report["load_after"] = os.getloadavg()
    headers = ["workload", "default (ms)", "before (ms)", "speed-up (95% interval)"]
    print(tabulate(table, headers=headers, disable_numparse=True))
    print(f"{torch.get_num_threads()} threads, load {load[0]:.2f} -> {report['load_after'][0]:.2f}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
