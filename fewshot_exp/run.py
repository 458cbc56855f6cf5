"""One experiment, end to end: validate config, load data, train, test, write results."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fewshot_exp.build import build_algorithm, load_splits, samplers, select_device
from fewshot_exp.checkpoint import load_checkpoint
from fewshot_exp.config import train_shape, validate
from fewshot_exp.evaluate import evaluate, lake_runs_error
from fewshot_exp.tracking import Tracker
from fewshot_exp.train import train


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_lake_runs_for(cfg: Any) -> list | None:
    if cfg.eval.lake_runs is None:
        return None
    from fewshot_exp.data.omniglot import load_lake_runs

    return load_lake_runs(cfg.eval.lake_runs, cfg.dataset.image_size)


def wandb_config(cfg: Any, choices: dict[str, str]) -> dict:
    """The resolved config plus the chosen option of each config group (`choices.algorithm=protonet`, ...)."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["choices"] = dict(choices)
    return config


def run_experiment(cfg: Any, run_dir: Path, name: str | None = None, group: str | None = None,
                   choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Train and test one configuration; returns the final metrics also written to results.json."""
    validate(cfg)
    device = select_device(cfg.device.value)
    seed_everything(cfg.seed)
    lake_runs = load_lake_runs_for(cfg)
    splits = load_splits(cfg, device)
    episode_samplers = samplers(cfg, splits, cfg.seed)
    algorithm = build_algorithm(cfg, splits.train.images.shape[1], device)
    choices = choices or {}
    tags = [*cfg.logger.tags, *(f"{k}={v}" for k, v in sorted(choices.items()) if k in ("dataset", "algorithm", "distance"))]
    tracker = Tracker(run_dir, cfg.logger, name=name, group=group, config=wandb_config(cfg, choices), tags=tags)
    exit_code = 1
    try:
        best_val = train(algorithm, episode_samplers, cfg, tracker, run_dir, device)
        algorithm.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["algorithm"])
        test = evaluate(algorithm, episode_samplers["test"], cfg.eval.episodes, cfg.eval.batch_images)
        t = train_shape(cfg)
        results = {
            "test/acc": test.mean,
            "test/acc_ci95": test.ci95,
            "test/loss": test.loss,
            "test/episodes": test.episodes,
            "test/n_way": cfg.episode.n_way,
            "test/k_shot": cfg.episode.k_shot,
            "val/best_acc": best_val,
            "train/episodes": cfg.train.episodes,
            "train/n_way": t.n_way,
            "train/k_shot": t.k_shot,
        }
        if lake_runs is not None:
            results.update(lake_runs_error(algorithm, lake_runs, device))
        tracker.log({k: v for k, v in results.items() if k.startswith("test/")}, cfg.train.episodes)
        tracker.summary(results)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        exit_code = 0
        return results
    finally:
        tracker.finish(exit_code)
