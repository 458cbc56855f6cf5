"""MAML's tasks of a meta-batch: per-task loop vs torch.func.vmap, on CUDA when available, else on the CPU.

    python benchmarks/maml_vmap.py [--tasks 8] [--way 5] [--shot 5] [--query 15] [--size 28] [--repeats 3]

Times one meta-training step (forward + backward, second order, `inner_steps` = 1) and one
evaluation forward (`test_inner_steps` = 3, under no_grad) of MAML and ProtoMAML with Conv-4 (64
channels), both paths in the same process on the same random episode; prints a table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from fewshot_exp.algorithms.maml import MAML, ProtoMAML
from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4


def best_seconds(fns: dict[bool, Callable[[], None]], repeats: int, device: torch.device) -> dict[bool, float]:
    """Best-of-`repeats` wall time of each function, run alternately so that load from other processes
    hits both alike."""
    best = {key: float("inf") for key in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("tasks", 8), ("way", 5), ("shot", 5), ("query", 15), ("size", 28), ("repeats", 3)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t, n, k, q = args.tasks, args.way, args.shot, args.query
    g = torch.Generator().manual_seed(0)
    ep = Episode(
        torch.rand(t, n * k, 1, args.size, args.size, generator=g).to(device),
        torch.arange(n).repeat_interleave(k).expand(t, -1).to(device),
        torch.rand(t, n * q, 1, args.size, args.size, generator=g).to(device),
        torch.arange(n).repeat_interleave(q).expand(t, -1).to(device),
        n,
    )
    print(
        f"device: {device} ({torch.get_num_threads()} threads), {t} tasks of {n}-way {k}-shot {q}-query, "
        f"{args.size} px, Conv-4 64 channels, best of {args.repeats}"
    )
    print(f"{'algorithm':<10} {'step':<22} {'loop (s)':>9} {'vmap (s)':>9} {'vmap/loop':>10}")
    for cls in (MAML, ProtoMAML):
        torch.manual_seed(0)
        algorithm = cls(Conv4(), Distance(), inner_steps=1, test_inner_steps=3, image_size=args.size).to(device)

        def train_step(algorithm: MAML = algorithm) -> None:
            algorithm.train()
            algorithm.zero_grad()
            algorithm.loss(algorithm(ep), ep).backward()

        def eval_step(algorithm: MAML = algorithm) -> None:
            algorithm.eval()
            with torch.no_grad():
                algorithm(ep)

        for label, step in (("meta-train (2nd order)", train_step), ("evaluate (3 steps)", eval_step)):

            def with_vectorize(vectorize: bool, step: Callable[[], None] = step, algorithm: MAML = algorithm) -> None:
                algorithm.vectorize = vectorize
                step()

            times = best_seconds({v: partial(with_vectorize, v) for v in (False, True)}, args.repeats, device)
            print(
                f"{cls.__name__:<10} {label:<22} {times[False]:>9.3f} {times[True]:>9.3f} "
                f"{times[True] / times[False]:>10.2f}"
            )


if __name__ == "__main__":
    main()
