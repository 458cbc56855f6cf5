"""The evaluation protocol: accuracy over many test episodes, mean and 95% confidence interval.

Episodes are drawn one at a time from the sampler's generator (so episode i is the same whatever the batching,
and an evaluation of n episodes is the first n of a longer one), then evaluated many at a time (as many tasks per
forward pass as `batch_images` allows; by default 4096 images on CUDA, 128 on CPU); with the encoder in eval mode
each task's result is independent of the others in its batch. The result keeps every episode's accuracy and loss
and the drawn image indices, whose fingerprint (`episodes_fingerprint`) tells whether two runs were tested on
the same episodes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.progress import progress
from fewshot_exp.provenance import update
from fewshot_exp.tta import Views


@dataclass
class Accuracy:
    mean: float  # fraction in [0, 1]
    ci95: float  # half-width of the 95% confidence interval of the mean
    episodes: int
    loss: float
    per_episode: torch.Tensor  # [episodes] float64 accuracy of each episode, in the order drawn (CPU)
    per_episode_loss: torch.Tensor  # [episodes] float64 mean query loss of each episode (CPU)
    drawn: torch.Tensor  # [episodes, N, K+Q] the episodes' image indices into the split (`EpisodeSampler.draw`)


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


def tasks_per_forward(sampler: EpisodeSampler, batch_images: int | None, copies: int = 1) -> int:
    """Tasks of `sampler` per forward pass of at most `batch_images` images, each image counted `copies` times."""
    if batch_images is None:
        batch_images = DEFAULT_BATCH_IMAGES.get(sampler.split.images.device.type, 4096)
    images_per_task = sampler.n_way * (sampler.k_shot + sampler.n_query) * copies
    return max(1, batch_images // images_per_task)


def evaluate(
    algorithm: FewShotAlgorithm,
    sampler: EpisodeSampler,
    episodes: int,
    batch_images: int | None = None,
    desc: str | None = None,
    views: Views | None = None,
) -> Accuracy:
    """Accuracy per episode over `episodes` episodes from `sampler`; with `desc`, a progress bar of that name.
    With `views` (test-time augmentation), each query's prediction pools its views, and the loss is over them all."""
    was_training = algorithm.training
    algorithm.eval()
    drawn = torch.cat([sampler.draw(1) for _ in range(episodes)])  # one at a time: independent of the batching
    views = views and views.restart()
    accs, losses = [], []
    per_batch = tasks_per_forward(sampler, batch_images, 1 if views is None else views.views + 1)
    bar = progress(total=episodes, unit="ep", desc=desc, show=desc is not None, leave=False)
    with torch.no_grad(), bar:
        for start in range(0, episodes, per_batch):
            episode = sampler.episode(drawn[start : start + per_batch], prepare=views is None)
            query_y = episode.query_y  # [T, N*Q]
            episode = episode if views is None else views.episode(episode, sampler.prepare)
            bar.update(episode.tasks)
            logits = algorithm(episode)  # [T, N*Q, N] (N*Q*(V+1) with views)
            losses.append(algorithm.episode_losses(logits, episode))  # the algorithm's own loss, per episode
            logits = logits if views is None else views.pool(logits)
            accs.append((logits.argmax(-1) == query_y).sum(1).double() / query_y.shape[1])
    algorithm.train(was_training)
    per_episode, per_episode_loss = torch.cat(accs).cpu(), torch.cat(losses).double().cpu()
    mean, ci95 = mean_ci95(per_episode)
    return Accuracy(mean, ci95, episodes, float(per_episode_loss.mean()), per_episode, per_episode_loss, drawn.cpu())


def episodes_fingerprint(sampler: EpisodeSampler, drawn: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of a set of episodes: the split they come from (its pixels, labels and class
    names, hashed as `provenance.dataset_hash` hashes each split), K, and every episode's drawn image indices
    [E, N, K+Q]. Equal fingerprints mean the same images in the same support and query roles with the same
    labels: episodes on which two models' accuracies can be compared episode by episode."""
    digest = hashlib.sha256()
    update(digest, sampler.split)
    digest.update(f"k_shot={sampler.k_shot} drawn={tuple(drawn.shape)}".encode())
    digest.update(memoryview(drawn.to("cpu", torch.int64).contiguous().numpy()).cast("B"))
    return digest.hexdigest()[:16]
