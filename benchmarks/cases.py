"""What is benchmarked: episode shapes, the synthetic images every contender reads, and the rows.

A row is one workload (ProtoNet training or evaluation, a MAML meta-step) with its contenders: our
code as the training loop / evaluation protocol runs it, our encoder-only limit on a pre-built
batch, and a peer library doing the same work. Every contender of a row is built from the same
`Shape` and reads the same uint8 images (`synthetic_images`), so they differ only in their code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fewshot_exp.data.imageset import ImageSet

#: A contender's factory: builds its model, optimizer and data, returns the step to time (one call).
Factory = Callable[[], Callable[[], Any]]


@dataclass(frozen=True)
class Shape:
    size: int  # image side in px
    channels: int
    way: int = 5
    shot: int = 5
    query: int = 15
    tasks: int = 1  # tasks per meta-batch (training) / per call of the step
    hidden: int = 64  # Conv-4 channels
    inner_steps: int = 1  # MAML
    episodes: int = 1  # evaluation episodes per call
    batch_images: int | None = None  # evaluation: images per forward pass (eval.batch_images; None: the default)

    @property
    def images_per_task(self) -> int:
        return self.way * (self.shot + self.query)


def synthetic_images(shape: Shape, classes: int = 40, per_class: int = 20, seed: int = 0) -> ImageSet:
    """Random uint8 images, `classes` x `per_class`, sorted by class (the layout of every dataset's splits)."""
    classes = max(classes, shape.way)
    per_class = max(per_class, shape.shot + shape.query)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(
        0, 256, (classes * per_class, shape.channels, shape.size, shape.size), generator=g, dtype=torch.uint8
    )
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageSet(images, labels, [f"class{i}" for i in range(classes)])


@dataclass
class Contender:
    label: str
    factory: Factory | None  # None: skipped
    role: str  # "ours", "limit" or "peer"
    skipped: str | None = None  # why (a peer that is not installed)


@dataclass
class Row:
    name: str
    what: str  # one line: the workload and how each contender does it
    shape: Shape
    episodes_per_call: int
    contenders: list[Contender] = field(default_factory=list)
