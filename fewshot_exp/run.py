"""One experiment, end to end: validate config, load data, train, test, write results."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from fewshot_exp import stopping
from fewshot_exp.build import build_algorithm, check_batch_memory, load_splits, samplers, select_device, tta_views
from fewshot_exp.checkpoint import load_checkpoint
from fewshot_exp.config import flat, train_shape, validate
from fewshot_exp.encoders.pretrained import init_encoder
from fewshot_exp.evaluate import Accuracy, episodes_fingerprint, evaluate
from fewshot_exp.files import strict_json, write_atomically
from fewshot_exp.lake_runs import lake_runs_error, runs_of
from fewshot_exp.provenance import provenance
from fewshot_exp.resume import resume_state
from fewshot_exp.run_files import METRICS_FILE, TEST_EPISODES_FILE, TIMING_FILE
from fewshot_exp.tracking import Tracker
from fewshot_exp.train import train

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:  # GPU runs: same kernels, same results (CPU runs are deterministic already)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: the jobs of a multirun share one process, and one job's setting must not reach the next
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # cuDNN autotuning (CUDA only)


def wandb_config(cfg: Any, choices: dict[str, str], origin: dict[str, Any] | None = None) -> dict:
    """The W&B run config, flat and named as on the command line, so that the dashboard groups, filters and plots
    by what was swept: each config group's chosen option under the group's name (`algorithm: protomaml`), every
    resolved value under its dotted key (`episode.k_shot`, `algorithm.inner_lr`), and the run's provenance
    (`provenance.git_commit`, ...; fewshot_exp/provenance.py)."""
    config = {group: option for group, option in choices.items() if not group.startswith("hydra")}
    values = flat(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if origin is not None:
        values.update(flat({"provenance": origin}))
    return {**values, **config}


def results_json(results: dict[str, Any]) -> str:
    """results.json's text: strict JSON, a number that is undefined (the interval of a single test episode) as
    null."""
    return strict_json(results, indent=2) + "\n"


def episodes_table(accuracy: Accuracy) -> Any:
    """A DataFrame of one row per evaluated episode: episode (its number in the order drawn), acc, loss."""
    import pandas as pd

    return pd.DataFrame(
        {
            "episode": range(accuracy.episodes),
            "acc": accuracy.per_episode.tolist(),
            "loss": accuracy.per_episode_loss.tolist(),
        }
    )


def episodes_csv(accuracy: Accuracy) -> str:
    return episodes_table(accuracy).to_csv(index=False)


def log_test_episodes(tracker: Tracker, test: Accuracy, step: int) -> None:
    """The per-episode test accuracies to W&B: a histogram and a table (the paired comparisons of the report read
    them from the run dir's TEST_EPISODES_FILE)."""
    tracker.log_histogram("test/acc_per_episode", test.per_episode.tolist(), step)
    tracker.log_table("test/per_episode", episodes_table(test), step)


def training_time(seconds: float, episodes: int, resume_from: dict[str, Any] | None) -> dict[str, float]:
    """This process's training time (validation included) and speed; a resumed run counts its own episodes."""
    trained = episodes - (resume_from["progress"]["episode"] if resume_from is not None else 0)
    return {
        "train/wall_s": seconds,
        "train/timed_episodes": trained,
        "train/episodes_per_s": trained / max(seconds, 1e-9),
    }


def run_experiment(
    cfg: Any, run_dir: Path, name: str | None = None, group: str | None = None, choices: dict[str, str] | None = None
) -> dict[str, Any]:
    """Train and test one configuration; returns the final metrics also written to results.json."""
    validate(cfg)
    device = select_device(cfg.device.value)
    seed_everything(cfg.seed, cfg.deterministic)
    views = tta_views(cfg)
    stopping.enter("loading data")
    lake_runs = runs_of(cfg)
    splits = load_splits(cfg, device)
    origin = provenance(splits, device)
    check_batch_memory(cfg, splits)  # training only: an eval_only run samples no training batch
    episode_samplers = samplers(cfg, splits)
    algorithm = build_algorithm(cfg, splits.train.images.shape[1], device)
    choices = choices or {}
    tags = [*cfg.logger.tags, *(f"{k}={choices[k]}" for k in ("algorithm", "dataset", "distance") if k in choices)]
    resume_from = resume_state(cfg, run_dir, device)
    if resume_from is not None:
        algorithm.load_state_dict(resume_from["algorithm"])
    else:  # from the start: the rows of a run killed before its first checkpoint are logged again
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        if cfg.train.init_from:
            init_encoder(algorithm, cfg.train.init_from, device)
    tracker = Tracker(
        run_dir,
        cfg.logger,
        name=name,
        group=group,
        config=wandb_config(cfg, choices, origin),
        tags=tags,
        resume=None if resume_from is None else (resume_from["wandb_run_id"], resume_from["progress"]["episode"]),
        job_type="train",
    )
    exit_code = 1
    try:
        stopping.enter("training")
        started = time.perf_counter()
        best_val = train(algorithm, episode_samplers, cfg, tracker, run_dir, device, resume_from)
        timing = training_time(time.perf_counter() - started, cfg.train.episodes, resume_from)
        algorithm.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["algorithm"])
        stopping.enter("the final test")
        test = evaluate(
            algorithm, episode_samplers["test"], cfg.eval.episodes, cfg.eval.batch_images, desc="test", views=views
        )
        t = train_shape(cfg)
        results = {
            "test/acc": test.mean,
            "test/acc_ci95": test.ci95,
            "test/loss": test.loss,
            "test/episodes": test.episodes,
            "test/episodes_fingerprint": episodes_fingerprint(episode_samplers["test"], test.drawn),
            "test/n_way": cfg.episode.n_way,
            "test/k_shot": cfg.episode.k_shot,
            "val/best_acc": best_val,
            "train/episodes": cfg.train.episodes,
            "train/n_way": t.n_way,
            "train/k_shot": t.k_shot,
            "model/parameters": sum(p.numel() for p in algorithm.parameters()),
            "provenance": origin,
        }
        if lake_runs is not None:
            sampler = episode_samplers["test"]
            channels = sampler.split.images.shape[1]  # the runs are grey
            results.update(lake_runs_error(algorithm, lake_runs, device, sampler.normalize, channels, views))
        stopping.enter("writing results")
        numbers = {k: v for k, v in results.items() if k.startswith("test/") and isinstance(v, (int, float))}
        tracker.log(numbers, cfg.train.episodes)
        tracker.summary({**{k: v for k, v in results.items() if k != "provenance"}, **timing})
        if timing["train/timed_episodes"] > 0 or not (run_dir / TIMING_FILE).exists():  # a resume after training
            write_atomically(run_dir / TIMING_FILE, json.dumps(timing, indent=2) + "\n")  # keeps what trained
        log_test_episodes(tracker, test, cfg.train.episodes)
        write_atomically(run_dir / TEST_EPISODES_FILE, episodes_csv(test))
        write_atomically(run_dir / "results.json", results_json(results))
        from fewshot_exp.viz import end_of_run  # matplotlib, only now

        end_of_run(algorithm, episode_samplers["test"], cfg, run_dir, tracker)  # viz=true plots; multiproto report
        exit_code = 0
        return results
    finally:
        tracker.finish(exit_code)
