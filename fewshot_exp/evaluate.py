"""The evaluation protocol: accuracy over many test episodes, mean and 95% confidence interval.

Episodes are evaluated many at a time (as many tasks per forward pass as `batch_images` allows; by default
4096 images on CUDA, 128 on CPU); with the encoder in eval mode each task's result is independent of the others
in its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.data.episodes import Episode, EpisodeSampler, to_float
from fewshot_exp.progress import progress


@dataclass
class Accuracy:
    mean: float  # fraction in [0, 1]
    ci95: float  # half-width of the 95% confidence interval of the mean
    episodes: int
    loss: float


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width 1.96 * s / sqrt(n) of its 95% normal confidence interval."""
    n = values.numel()
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan")
    return mean, 1.96 * float(values.std(unbiased=True)) / math.sqrt(n)


#: Images per forward when `batch_images` is None. On CPU, activations that outgrow the cache (and glibc's 32 MB mmap
#: threshold, past which every forward maps and faults in fresh pages; fewshot_exp/allocator.py's huge pages soften
#: that) make bigger forwards slower per image, so a small batch is the fastest default there.
#: `python -m benchmarks.run --rows protonet-eval` times the evaluation at this default.
DEFAULT_BATCH_IMAGES = {"cuda": 4096, "cpu": 128}


def tasks_per_forward(sampler: EpisodeSampler, batch_images: int | None) -> int:
    if batch_images is None:
        batch_images = DEFAULT_BATCH_IMAGES.get(sampler.split.images.device.type, 4096)
    images_per_task = sampler.n_way * (sampler.k_shot + sampler.n_query)
    return max(1, batch_images // images_per_task)


def evaluate(
    algorithm: FewShotAlgorithm,
    sampler: EpisodeSampler,
    episodes: int,
    batch_images: int | None = None,
    desc: str | None = None,
) -> Accuracy:
    """Accuracy per episode over `episodes` episodes from `sampler`; with `desc`, a progress bar of that name."""
    was_training = algorithm.training
    algorithm.eval()
    accs, losses = [], []
    per_batch = tasks_per_forward(sampler, batch_images)
    bar = progress(total=episodes, unit="ep", desc=desc, show=desc is not None, leave=False)
    with torch.no_grad(), bar:
        for start in range(0, episodes, per_batch):
            episode = sampler.sample(min(per_batch, episodes - start))
            bar.update(episode.tasks)
            logits = algorithm(episode)  # [T, N*Q, N]
            accs.append((logits.argmax(-1) == episode.query_y).float().mean(1))
            losses.append(
                torch.nn.functional.cross_entropy(logits.transpose(1, 2), episode.query_y, reduction="none").mean(1)
            )
    algorithm.train(was_training)
    mean, ci95 = mean_ci95(torch.cat(accs).cpu())
    return Accuracy(mean, ci95, episodes, float(torch.cat(losses).mean()))


def lake_runs_error(
    algorithm: FewShotAlgorithm,
    runs: list,
    device: torch.device,
    normalize: Callable | None = None,
    channels: int = 1,
) -> dict[str, float]:
    """Percent error of 20-way one-shot classification on each official Omniglot run, and their mean (the grey
    images converted to the model's `channels`, then normalised by `normalize`, the episodes' normalisation)."""
    from fewshot_exp.data.common import to_channels

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = to_float(to_channels(images, channels).to(device))
        return x if normalize is None else normalize(x)

    was_training = algorithm.training
    algorithm.eval()
    errors = {}
    with torch.no_grad():
        for run in progress(runs, unit="run", desc="Omniglot one-shot runs", leave=False):
            n = run.support.shape[0]
            episode = Episode(
                support_x=prepare(run.support)[None],
                support_y=torch.arange(n, device=device)[None],
                query_x=prepare(run.query)[None],
                query_y=run.query_labels.to(device)[None],
                n_way=n,
            )
            correct = (algorithm(episode).argmax(-1) == episode.query_y).float().mean()
            errors[run.name] = 100.0 * (1.0 - float(correct))
    algorithm.train(was_training)
    errors_list = list(errors.values())
    return {
        "test/lake_error": sum(errors_list) / len(errors_list),
        **{f"test/lake_error/{k}": v for k, v in errors.items()},
    }
