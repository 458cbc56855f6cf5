"""The Omniglot challenge's one-shot protocol (Lake et al. 2015): the official 20-way within-alphabet one-shot
runs (`eval.lake_runs`, folders run01, run02, ...), each 20 training images of 20 characters of one alphabet and
20 test images, each test image classified on its own against the 20 (inductive), reported as percent error per
run and their mean (`test/lake_error`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.data.common import to_channels
from fewshot_exp.data.episodes import Episode, to_float
from fewshot_exp.data.omniglot import decode
from fewshot_exp.errors import UserError
from fewshot_exp.progress import progress
from fewshot_exp.tta import Views


@dataclass
class LakeRun:
    """One official 20-way one-shot run: query i's class is support image `query_labels[i]`."""

    name: str
    support: torch.Tensor  # [20, 1, H, W] uint8, class01..class20
    query: torch.Tensor  # [20, 1, H, W] uint8, item01..item20
    query_labels: torch.Tensor  # [20] int64, index into support


def runs_of(cfg: Any) -> list[LakeRun] | None:
    """The one-shot runs of `eval.lake_runs` at the dataset's image size; None when it is unset."""
    if cfg.eval.lake_runs is None:
        return None
    return load_lake_runs(cfg.eval.lake_runs, cfg.dataset.image_size)


def load_lake_runs(path: str | os.PathLike, image_size: int) -> list[LakeRun]:
    """The official one-shot runs in `path/runNN/` (training/classNN.png, test/itemNN.png, class_labels.txt)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(
            f"Omniglot one-shot runs folder {path} does not exist: point it at the folder holding run01, ..."
        )
    runs = sorted(d for d in path.iterdir() if d.is_dir() and re.fullmatch(r"run\d+", d.name))
    if not runs:
        raise UserError(f"no one-shot runs (run01/, run02/, ...) in {path}: point it at the folder holding them")
    return [_read_run(d, image_size) for d in runs]


def _read_run(run: Path, image_size: int) -> LakeRun:
    support = sorted((run / "training").glob("*.png"))
    query = sorted((run / "test").glob("*.png"))
    labels_file = run / "class_labels.txt"
    if not support or not query or not labels_file.is_file():
        raise UserError(f"one-shot run {run} needs training/*.png, test/*.png and class_labels.txt")
    class_of = {}  # query file name -> support file name
    for line in labels_file.read_text().splitlines():
        if line.strip():
            item, cls = line.split()
            class_of[PurePosixPath(item).name] = PurePosixPath(cls).name
    index = {f.name: i for i, f in enumerate(support)}
    try:
        labels = torch.tensor([index[class_of[f.name]] for f in query], dtype=torch.long)
    except KeyError as e:
        raise UserError(f"{labels_file} has no valid class for {e.args[0]}: the run is incomplete") from None
    return LakeRun(
        run.name,
        decode(((str(f), f.read_bytes()) for f in support), image_size),
        decode(((str(f), f.read_bytes()) for f in query), image_size),
        labels,
    )


def lake_runs_error(
    algorithm: FewShotAlgorithm,
    runs: list[LakeRun],
    device: torch.device,
    normalize: Callable | None = None,
    channels: int = 1,
    views: Views | None = None,
) -> dict[str, float]:
    """Percent error of 20-way one-shot classification on each official Omniglot run, and their mean (the grey
    images converted to the model's `channels`, then normalised by `normalize`, the episodes' normalisation;
    with `views`, each image's test-time views too)."""

    def pixels(images: torch.Tensor) -> torch.Tensor:
        return to_float(to_channels(images, channels).to(device))[None]  # [1, 20, C, H, W]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x if normalize is None else normalize(x)

    was_training = algorithm.training
    algorithm.eval()
    views = views and views.restart()
    errors = {}
    with torch.no_grad():
        for run in progress(runs, unit="run", desc="Omniglot one-shot runs", leave=False):
            n = run.support.shape[0]
            raw = Episode(
                support_x=pixels(run.support),
                support_y=torch.arange(n, device=device)[None],
                query_x=pixels(run.query),
                query_y=run.query_labels.to(device)[None],
                n_way=n,
            )
            if views is None:
                episode = Episode(prepare(raw.support_x), raw.support_y, prepare(raw.query_x), raw.query_y, n)
                logits = algorithm(episode)
            else:
                logits = views.pool(algorithm(views.episode(raw, prepare)))
            wrong = int((logits.argmax(-1) != raw.query_y).sum())
            errors[run.name] = 100.0 * wrong / raw.query_y.numel()
    algorithm.train(was_training)
    errors_list = list(errors.values())
    return {
        "test/lake_error": sum(errors_list) / len(errors_list),
        **{f"test/lake_error/{k}": v for k, v in errors.items()},
    }
