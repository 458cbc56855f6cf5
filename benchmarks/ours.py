"""Our contenders: the training step and the evaluation protocol as the runner calls them, and the encoder-only
limits they are measured against.

- Training: `EpisodeSampler.sample()` on the images held as a tensor on the device, then
  `fewshot_exp.train.training_step` (forward, loss, backward, Adam step; MAML's task-by-task
  backward), the LR scheduler step and the running loss/accuracy sums, as `train()` runs each episode.
- Evaluation: `fewshot_exp.evaluate.evaluate`, many episodes per encoder forward.
- Encoder-only limit: the same Conv-4 (same memory format) on one pre-built float batch of the same
  images per step, with nothing else: forward + `sum().backward()` + Adam step for training, a
  no-grad eval-mode forward per chunk of `batch_images` for evaluation. No sampling, prototypes,
  distances, loss or inner loop: what the encoder alone costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.cases import Shape, synthetic_images
from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.algorithms.maml import MAML
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.evaluate import evaluate, tasks_per_forward
from fewshot_exp.train import Progress, training_step


def sampler(shape: Shape, device: torch.device, seed: int = 0, evaluation: bool = False) -> EpisodeSampler:
    """Episodes of synthetic images on `device`, drawn as a run draws them: training episodes with a generator on
    the device, evaluation episodes with a CPU one (fewshot_exp/build.py: samplers)."""
    split = synthetic_images(shape).to(device)
    generator = torch.Generator(device="cpu" if evaluation else device).manual_seed(seed)
    return EpisodeSampler(split, shape.way, shape.shot, shape.query, shape.tasks, generator, "benchmark")


def encoder(shape: Shape, channels_last: bool = True, fuse_norm_pool: bool = True) -> Conv4:
    return Conv4(shape.channels, shape.hidden, shape.hidden, channels_last=channels_last, fuse_norm_pool=fuse_norm_pool)


def train_loop_step(
    algorithm: FewShotAlgorithm, shape: Shape, device: torch.device, amp: bool = False
) -> Callable[[], Any]:
    """One episode of `fewshot_exp.train.train` (default Adam and StepLR settings, `train.amp`), without logging."""
    algorithm.to(device).train()
    episodes = sampler(shape, device)
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1000, gamma=0.5)
    progress = Progress(running=torch.zeros(2, device=device))

    def step() -> None:
        episode = episodes.sample()
        loss, logits = training_step(algorithm, episode, optimizer, device, amp)
        scheduler.step()
        progress.add(loss, logits, episode)

    return step


def protonet_train(shape: Shape, device: torch.device, amp: bool = False) -> Callable[[], Any]:
    return train_loop_step(ProtoNet(encoder(shape), Distance("l2")), shape, device, amp)


def maml_train(shape: Shape, device: torch.device, first_order: bool, amp: bool = False) -> Callable[[], Any]:
    algorithm = MAML(
        encoder(shape),
        Distance("l2"),
        inner_steps=shape.inner_steps,
        first_order=first_order,
        n_way=shape.way,
        image_size=shape.size,
    )
    return train_loop_step(algorithm, shape, device, amp)


def protonet_eval(shape: Shape, device: torch.device) -> Callable[[], Any]:
    """`shape.episodes` evaluation episodes through `evaluate` (returns after its host read of the accuracies)."""
    algorithm = ProtoNet(encoder(shape), Distance("l2")).to(device)
    episodes = sampler(shape, device, evaluation=True)
    return lambda: evaluate(algorithm, episodes, shape.episodes, shape.batch_images)


def limit_train(
    shape: Shape, device: torch.device, images: int, channels_last: bool = True, fuse_norm_pool: bool = True
) -> Callable[[], Any]:
    """Encoder forward + backward + Adam step on a pre-built batch of `images` images."""
    net = encoder(shape, channels_last, fuse_norm_pool).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(images, shape.channels, shape.size, shape.size, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        net(x).sum().backward()
        optimizer.step()

    return step


def limit_eval(shape: Shape, device: torch.device, channels_last: bool = True) -> Callable[[], Any]:
    """No-grad eval-mode encoder forwards over `shape.episodes` episodes' images, in evaluate's chunks."""
    net = encoder(shape, channels_last).to(device).eval()
    per_forward = tasks_per_forward(sampler(shape, device), shape.batch_images)
    chunks = [min(per_forward, shape.episodes - start) for start in range(0, shape.episodes, per_forward)]
    x = torch.rand(chunks[0] * shape.images_per_task, shape.channels, shape.size, shape.size, device=device)

    def step() -> None:
        with torch.no_grad():
            for tasks in chunks:
                net(x[: tasks * shape.images_per_task])

    return step
