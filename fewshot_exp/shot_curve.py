"""Evaluate a trained checkpoint at several episode shapes, without retraining: the test-shot curve.

    python -m fewshot_exp eval_only=true checkpoint=<run dir or .pt file> eval.k_shots=[1,2,4,8,16]

The model is rebuilt from the training run's own overrides (`<run dir>/.hydra/overrides.yaml`, next to
the checkpoint), with this command's overrides on top; a checkpoint without its run dir uses this command's
config. Every (n_way, k_shot) of `eval.n_ways` x `eval.k_shots` (each defaulting to the `episode` value) is
checked against the test split before any evaluation, then evaluated on `eval.episodes` episodes of
`episode.n_query` queries per class. The points go to `results.json` (`curve`), `curve.csv`, a plot
`acc_vs_shots.png`, and W&B (a table and the plot), and `python -m fewshot_exp.report` shows them; every
episode's accuracy goes to `curve_episodes.csv`. Each point's test episodes are those a training run of that
shape draws (`eval.seed`), so at the training shape the curve repeats the run's own test. With `eval.lake_runs`
(the Omniglot presets set it), the errors on the official one-shot runs go to `results.json` too, and with
`eval.tta`, every point and the runs are tested with those views.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from fewshot_exp import stopping
from fewshot_exp.build import build_algorithm, episode_seed, load_splits, samplers, select_device, tta_views
from fewshot_exp.checkpoint import checkpoint_path, load_checkpoint
from fewshot_exp.config import head_outputs, train_shape, validate
from fewshot_exp.data.episodes import EpisodeSampler, check_shape
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError
from fewshot_exp.evaluate import episodes_fingerprint, evaluate
from fewshot_exp.files import write_atomically
from fewshot_exp.lake_runs import lake_runs_error, runs_of
from fewshot_exp.provenance import provenance
from fewshot_exp.resume import held_run_files, saved_overrides
from fewshot_exp.run import episodes_table, results_json, wandb_config
from fewshot_exp.run_files import CURVE_EPISODES_FILE
from fewshot_exp.tracking import Tracker

log = logging.getLogger(__name__)

KEPT_FROM_COMMAND = {"eval_only", "checkpoint", "resume"}  # never taken from the training run's overrides


def checkpoint_file(value: str | None) -> Path:
    """The checkpoint to evaluate: a .pt file, or a run dir (its best.pt)."""
    if not value:
        raise UserError(
            "eval_only=true needs checkpoint=<run dir or .pt file>, e.g. checkpoint=outputs/runs/<day>/<time>"
        )
    return checkpoint_path(value, "checkpoint")


def training_config(checkpoint: Path, cfg: Any) -> Any:
    """The training run's config (from its overrides next to the checkpoint) with this command's on top."""
    saved = checkpoint.parent / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        log.warning("%s has no .hydra/overrides.yaml beside it: using this command's config for the model", checkpoint)
        return cfg
    now = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra")]
    then = saved_overrides(checkpoint.parent, now, skip=KEPT_FROM_COMMAND)
    return compose(config_name="config", overrides=then + now)


def shapes(cfg: Any) -> list[tuple[int, int]]:
    n_ways = list(cfg.eval.n_ways or [cfg.episode.n_way])
    k_shots = list(cfg.eval.k_shots or [cfg.episode.k_shot])
    for name, values, least in (("eval.n_ways", n_ways, 2), ("eval.k_shots", k_shots, 1)):
        if any(v < least for v in values):
            raise UserError(f"{name}={values}: every value must be at least {least}")
    outputs = head_outputs(cfg)
    if outputs is not None and max(n_ways) > outputs:
        raise UserError(
            f"eval.n_ways={n_ways}: this checkpoint's head has {outputs} outputs; evaluate at most that many classes"
        )
    return list(itertools.product(n_ways, k_shots))


def test_samplers(cfg: Any, splits: Splits, points: list[tuple[int, int]]) -> list[EpisodeSampler]:
    """One test sampler per shape, each from the test generator's seed (normalised as in training), so each
    point is tested on the episodes a run of that shape is tested on."""
    for n_way, k_shot in points:  # all shapes are checked before anything is evaluated
        check_shape(splits.test, "test", n_way, k_shot, cfg.episode.n_query)
    normalize = samplers(cfg, splits)["test"].normalize
    return [
        EpisodeSampler(
            splits.test,
            n_way,
            k_shot,
            cfg.episode.n_query,
            cfg.episode.tasks,
            torch.Generator().manual_seed(episode_seed(cfg, "test")),
            "test",
            None,
            normalize,
        )
        for n_way, k_shot in points
    ]


def load_weights(algorithm: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    try:
        algorithm.load_state_dict(state["algorithm"])
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(
            f"{path} does not fit the model of this config ({first}); evaluate it with its training config"
        ) from None


def shot_curve(cfg: Any) -> tuple[Path, Any, list[dict[str, Any]], pd.DataFrame, dict[str, Any], dict[str, float]]:
    """(the checkpoint file, the config the model was rebuilt with, one result per evaluated shape, the accuracy of
    every episode of every shape, provenance, the Omniglot one-shot runs' errors where `eval.lake_runs` is set)."""
    path = checkpoint_file(cfg.checkpoint)
    state = load_checkpoint(path, needs=("algorithm", "config"))
    model_cfg = training_config(path, cfg)
    validate(model_cfg)
    views = tta_views(model_cfg)
    points = shapes(model_cfg)
    lake_runs = runs_of(model_cfg)
    device = select_device(model_cfg.device.value)
    splits = load_splits(model_cfg, device)
    episode_samplers = test_samplers(model_cfg, splits, points)
    algorithm = build_algorithm(model_cfg, splits.train.images.shape[1], device)
    load_weights(algorithm, state, path)
    curve, per_episode = [], []
    for (n_way, k_shot), sampler in zip(points, episode_samplers):
        desc = f"test {n_way}-way {k_shot}-shot"
        acc = evaluate(algorithm, sampler, model_cfg.eval.episodes, model_cfg.eval.batch_images, desc=desc, views=views)
        log.info("%d-way %d-shot: %.2f%% ± %.2f%%", n_way, k_shot, 100 * acc.mean, 100 * acc.ci95)
        curve.append(
            {
                "n_way": n_way,
                "k_shot": k_shot,
                "acc": acc.mean,
                "ci95": acc.ci95,
                "loss": acc.loss,
                "episodes": acc.episodes,
                "episodes_fingerprint": episodes_fingerprint(sampler, acc.drawn),
            }
        )
        per_episode.append(episodes_table(acc).assign(n_way=n_way, k_shot=k_shot))
    columns = ["n_way", "k_shot", "episode", "acc", "loss"]
    lake = {}
    if lake_runs is not None:
        normalize, channels = episode_samplers[0].normalize, splits.test.images.shape[1]
        lake = lake_runs_error(algorithm, lake_runs, device, normalize, channels, views)
        log.info("Omniglot one-shot runs: %.2f%% mean error", lake["test/lake_error"])
    return path, model_cfg, curve, pd.concat(per_episode)[columns], provenance(splits, device), lake


def training_choices(checkpoint: Path, choices: dict[str, str]) -> dict[str, str]:
    """The training run's config group choices (its .hydra/hydra.yaml beside the checkpoint), else `choices`."""
    hydra_file = checkpoint.parent / ".hydra" / "hydra.yaml"
    return dict(OmegaConf.load(hydra_file).hydra.runtime.choices) if hydra_file.is_file() else choices


def model_identity(checkpoint: Path, model_cfg: Any, choices: dict[str, str]) -> dict[str, Any]:
    """What was evaluated: the training run's config group choices (`training_choices`), training shape, seed and
    command-line overrides (so that the report tells apart, and pairs by seed, curves of different trainings)."""
    t = train_shape(model_cfg)
    trained_with = saved_overrides(checkpoint.parent, [], skip=KEPT_FROM_COMMAND)
    return {
        "checkpoint": str(checkpoint),
        "dataset": choices.get("dataset", model_cfg.dataset.name),
        "algorithm": choices.get("algorithm", "?"),
        "distance": choices.get("distance", model_cfg.distance.name),
        "train_n_way": t.n_way,
        "train_k_shot": t.k_shot,
        "seed": model_cfg.seed,
        "overrides": dict(o.split("=", 1) for o in trained_with if "=" in o),
    }


def plot_curve(curve: list[dict[str, Any]], model: dict[str, Any], path: Path) -> None:
    from fewshot_exp.report import plot_acc_vs_shots  # matplotlib, only now

    table = pd.DataFrame(curve)[["n_way", "k_shot", "acc", "ci95"]]
    table.insert(0, "dataset", model["dataset"])
    table.insert(1, "algorithm", model["algorithm"])
    plot_acc_vs_shots(table, path)


def run_shot_curve(cfg: Any, run_dir: Path, name: str, group: str, choices: dict[str, str]) -> dict[str, Any]:
    """The eval_only=true run: the curve into results.json, curve.csv, acc_vs_shots.png and W&B."""
    held = held_run_files(run_dir)
    if held:  # e.g. hydra.run.dir=<the run being evaluated>
        raise UserError(f"{run_dir} already holds a run ({', '.join(held)}): evaluate into another hydra.run.dir")
    stopping.enter("the shot curve")
    path, model_cfg, curve, per_episode, origin, lake = shot_curve(cfg)
    choices = training_choices(path, choices)  # the model's, as the training run's W&B config and tags have them
    model = model_identity(path, model_cfg, choices)
    results = {"eval_only": True, "model": model, "curve": curve, **lake, "provenance": origin}
    tags = [
        *cfg.logger.tags,
        "eval_only",
        *(f"{k}={choices[k]}" for k in ("algorithm", "dataset", "distance") if k in choices),
    ]
    tracker = Tracker(
        run_dir, cfg.logger, name=f"eval_only:{name}", group=group,
        config=wandb_config(model_cfg, choices, origin), tags=tags, resume=None, job_type="eval",
    )  # fmt: skip
    exit_code = 1
    try:
        table = pd.DataFrame(curve)
        write_atomically(run_dir / "curve.csv", table.to_csv(index=False))
        write_atomically(run_dir / CURVE_EPISODES_FILE, per_episode.to_csv(index=False))
        plot_curve(curve, model, run_dir / "acc_vs_shots.png")
        tracker.log_table("test/curve", table, step=0)
        tracker.log_images({"test/acc_vs_shots": run_dir / "acc_vs_shots.png"}, step=0)
        tracker.summary({**{f"test/acc@{p['n_way']}way{p['k_shot']}shot": p["acc"] for p in curve}, **lake})
        write_atomically(run_dir / "results.json", results_json(results))
        exit_code = 0
        return results
    finally:
        tracker.finish(exit_code)
