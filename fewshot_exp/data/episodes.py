"""Episodes and the episode sampler: N classes, K support + Q query images per class, T tasks.

Sampling is vectorised over tasks and classes (no per-image Python work) and drawn from a
`torch.Generator` seeded by the run, so the same seed gives the same episodes. Drawing (which images, in
which role) is apart from making the episode (gathering, augmenting, normalising the images), so an evaluation
can draw its episodes one at a time, independently of how many it evaluates per forward pass, on a CPU
generator, the same on every device. A sampler may augment its images (training episodes; random numbers from
the same generator) and normalise them (`fewshot_exp/data/augment.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError


@dataclass
class Episode:
    support_x: torch.Tensor  # [T, N*K, C, H, W] float in [0, 1]
    support_y: torch.Tensor  # [T, N*K] int64 in 0..N-1
    query_x: torch.Tensor  # [T, N*Q, C, H, W]
    query_y: torch.Tensor  # [T, N*Q]
    n_way: int

    @property
    def tasks(self) -> int:
        return self.support_x.shape[0]

    def task(self, t: int) -> Episode:
        """Task t of the meta-batch, as an episode of one task."""
        parts = (self.support_x, self.support_y, self.query_x, self.query_y)
        return Episode(*(part[t : t + 1] for part in parts), n_way=self.n_way)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]."""
    return x.float().div_(255.0)


def check_shape(split: ImageSet, split_name: str, n_way: int, k_shot: int, n_query: int, keys: str = "episode") -> None:
    """Raise a one-line UserError if the split cannot fill an N-way K-shot Q-query episode; the message names
    settings of `keys` (`episode`, `train.episode`) that would fit."""
    if n_way > split.n_classes:
        raise UserError(
            f"n_way={n_way} is more than the {split.n_classes} classes of the {split_name} split; "
            + (f"use n_way <= {split.n_classes}" if split.n_classes >= 2 else "it needs at least 2 for any episode")
        )
    if k_shot + n_query > split.min_per_class:
        raise UserError(
            f"k_shot + n_query = {k_shot} + {n_query} is more than the {split.min_per_class} images per class of the "
            f"{split_name} split; {fitting_shape(split.min_per_class, k_shot, n_query, keys)}"
        )


def fitting_shape(have: int, k_shot: int, n_query: int, keys: str) -> str:
    """Advice for a class of `have` images that cannot hold k_shot + n_query: the n_query that fits, else a k_shot."""
    if have < 2:
        return "no episode fits: a class with one image has no room for a query besides its support image"
    if k_shot < have:
        other = f" (or a k_shot of at most {have - n_query})" if n_query < have else ""
        return f"use {keys}.n_query={have - k_shot}{other}"
    if n_query < have:
        return f"use a k_shot of at most {have - n_query}"
    return f"use {keys}.n_query={have // 2} with a k_shot of at most {have - have // 2}"


def batch_bytes(split: ImageSet, n_way: int, k_shot: int, n_query: int, tasks: int) -> int:
    """Bytes of one sampled batch's float images [T, N, K+Q, C, H, W]: memory any algorithm needs at once."""
    return tasks * n_way * (k_shot + n_query) * split.images[0].numel() * 4


def alphabet_of_class(split: ImageSet, n_way: int) -> torch.Tensor:
    """[n_classes] index of each class's alphabet (the class name's part before its first '/'), counting only
    alphabets with at least `n_way` classes; -1 for the classes of the others."""
    names = [name.partition("/")[0] for name in split.class_names]
    if all("/" not in name for name in split.class_names):
        raise UserError(
            "train.episode.within_alphabet needs classes named alphabet/character (dataset=glyphs or omniglot)"
        )
    sizes = Counter(names)
    kept = {a: i for i, a in enumerate(a for a, size in sizes.items() if size >= n_way)}
    if not kept:
        raise UserError(
            f"train.episode.within_alphabet: no training alphabet has {n_way} classes (the largest has "
            f"{max(sizes.values())}); lower train.episode.n_way"
        )
    return torch.tensor([kept.get(a, -1) for a in names])


class EpisodeSampler:
    """Draws batches of tasks from one split. The images stay on the split's device; which images make an episode
    is drawn on the generator's device (the split's, or the CPU)."""

    def __init__(
        self,
        split: ImageSet,
        n_way: int,
        k_shot: int,
        n_query: int,
        tasks: int,
        generator: torch.Generator,
        split_name: str = "",
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        within_alphabet: bool = False,
    ) -> None:
        check_shape(split, split_name or "data", n_way, k_shot, n_query)
        self.split, self.n_way, self.k_shot, self.n_query, self.tasks = split, n_way, k_shot, n_query, tasks
        self.generator = generator
        self.augment, self.normalize = augment, normalize  # [B, C, H, W] floats in [0, 1] -> same shape
        self._max_count = int(split.counts.max())
        drawn_on = generator.device  # the split's, or the CPU for evaluation episodes on any device
        self._counts, self._offsets = split.counts.to(drawn_on), split.offsets.to(drawn_on)
        self._pad = torch.arange(self._max_count, device=drawn_on)  # [M]
        self._alphabets = alphabet_of_class(split, n_way).to(drawn_on) if within_alphabet else None  # [C]

    def sample(self, tasks: int | None = None) -> Episode:
        return self.episode(self.draw(self.tasks if tasks is None else tasks))

    def draw(self, tasks: int) -> torch.Tensor:
        """Which images make `tasks` episodes: indices [T, N, K+Q] into the split, each class's first K the
        support and the rest the query; on the generator's device."""
        split, n, k, q = self.split, self.n_way, self.k_shot, self.n_query
        device = self.generator.device
        # Classes: the first n of a random permutation per task (within_alphabet: of one random alphabet's classes).
        keys = torch.rand(tasks, split.n_classes, generator=self.generator, device=device)
        if self._alphabets is not None:
            count = int(self._alphabets.max()) + 1  # alphabets with at least n classes; the others are -1
            alphabet = torch.randint(count, (tasks, 1), generator=self.generator, device=device)
            keys = keys.masked_fill(self._alphabets != alphabet, 2.0)
        classes = keys.argsort(1)[:, :n]  # [T, N]
        # Images: the first k+q of a random permutation of each class's images (padding slots sort last).
        counts = self._counts[classes]  # [T, N]
        keys = torch.rand(tasks, n, self._max_count, generator=self.generator, device=device)
        keys = keys.masked_fill(self._pad >= counts[..., None], 2.0)
        within = keys.argsort(2)[..., : k + q]  # [T, N, K+Q]
        return self._offsets[classes][..., None] + within  # [T, N, K+Q]

    def episode(self, index: torch.Tensor, prepare: bool = True) -> Episode:
        """The episodes of drawn indices [T, N, K+Q] (`draw`): images gathered, augmented and normalised (with
        `prepare=False`, left as [0, 1] pixels); the i-th class of an episode has label i."""
        split, n, k = self.split, self.n_way, self.k_shot
        device = split.images.device
        index = index.to(device)
        tasks = index.shape[0]
        x = to_float(split.images[index])  # [T, N, K+Q, C, H, W]
        x = self.prepare(x) if prepare else x
        labels = torch.arange(n, device=device).view(1, n, 1)
        y = labels.expand(tasks, n, index.shape[2])
        return Episode(
            support_x=x[:, :, :k].flatten(1, 2),
            support_y=y[:, :, :k].flatten(1, 2),
            query_x=x[:, :, k:].flatten(1, 2),
            query_y=y[:, :, k:].flatten(1, 2),
            n_way=n,
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Augment (with this sampler's generator) and normalise images [..., C, H, W] in [0, 1]."""
        if self.augment is None and self.normalize is None:
            return x
        flat = x.flatten(0, -4)
        if self.augment is not None:
            flat = self.augment(flat, self.generator)
        if self.normalize is not None:
            flat = self.normalize(flat)
        return flat.view(x.shape)
