"""Accuracy of a trained gradient-based meta-learner against the number of test-time inner steps.

    python benchmarks/inner_steps.py RUN_DIR [--steps 0 1 3 10] [--episodes 100] [--splits val test] [--lake]

Loads RUN_DIR/best.pt (maml, fomaml, protomaml, reptile), rebuilds the run's data and samplers from
the config stored in the checkpoint, and prints mean accuracy ± 95% CI and loss for each
`test_inner_steps`, on the same episodes for every step count (each split's sampler is reseeded with the run's
own seed for that split, so the validation and test episodes are the first `--episodes` of the run's).
`--lake` adds the error on the run's official Omniglot one-shot runs (`eval.lake_runs`). Choose the step
count on validation; the test columns are there to report the choice, not to make it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fewshot_exp.build import build_algorithm, episode_seed, load_splits, samplers, select_device
from fewshot_exp.checkpoint import load_checkpoint
from fewshot_exp.evaluate import evaluate
from fewshot_exp.lake_runs import lake_runs_error, runs_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 3, 10])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"])
    parser.add_argument("--lake", action="store_true", help="also the error on the run's eval.lake_runs")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.run_dir / "best.pt")
    cfg = OmegaConf.create(checkpoint["config"])
    device = select_device(cfg.device)
    splits = load_splits(cfg, device)
    episode_samplers = samplers(cfg, splits)
    algorithm = build_algorithm(cfg, splits.train.images.shape[1], device)
    algorithm.load_state_dict(checkpoint["algorithm"])
    if not hasattr(algorithm, "test_inner_steps"):
        parser.error(f"{type(algorithm).__name__} has no inner loop")
    print(f"{args.run_dir}/best.pt: {type(algorithm).__name__}, {args.episodes} episodes per split")
    lake = runs_of(cfg) if args.lake else None
    if args.lake and lake is None:
        parser.error("--lake: the run has no eval.lake_runs")
    header = " ".join(f"{s + ' acc':>16} {s + ' loss':>9}" for s in args.splits)
    print(f"{'steps':>5} {header}" + ("  one-shot runs error" if lake else ""))
    for steps in args.steps:
        algorithm.test_inner_steps = steps
        row = []
        for split in args.splits:
            episode_samplers[split].generator.manual_seed(episode_seed(cfg, split))  # the same for every step count
            result = evaluate(algorithm, episode_samplers[split], args.episodes, cfg.eval.batch_images)
            row.append(f"{100 * result.mean:>9.2f} ± {100 * result.ci95:4.2f} {result.loss:>9.3f}")
        if lake:
            error = lake_runs_error(algorithm, lake, device, episode_samplers["test"].normalize)["test/lake_error"]
            row.append(f"{error:>19.2f}%")
        print(f"{steps:>5} " + " ".join(row))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
