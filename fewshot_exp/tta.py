"""Test-time augmentation (`eval.tta=V`): every test image is also seen in V random views.

A support image's views are extra shots of its class (ProtoNet averages them into the class's prototype; MAML
adapts on them), and a query's prediction is the mean of the log-probabilities of its own views. Each query is
still classified on its own against the support set: the protocol stays inductive.

The views are drawn with the `dataset.augment` settings (whether or not training augments) from a CPU
generator seeded by `eval.seed` (`build.SEED_OFFSETS["tta"]`), image by image in episode order, so episode i's
views are the same whatever the batching and on every device. Each evaluation starts the generator afresh.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewshot_exp.data.augment import Augment
from fewshot_exp.data.episodes import Episode


class Views:
    """V augmented views of each image besides the image itself."""

    def __init__(self, augment: Augment, views: int, seed: int) -> None:
        self.augment, self.views, self.seed = augment, views, seed
        self.generator = torch.Generator().manual_seed(seed)

    def restart(self) -> Views:
        """These views from the start of their generator: an evaluation's views do not depend on what was
        evaluated before it (the test episodes before the one-shot runs, one curve point before the next)."""
        self.generator.manual_seed(self.seed)
        return self

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """[T, M, C, H, W] images in [0, 1] -> [T, M·(V+1), C, H, W]: each image followed by its V views."""
        copies = x.unsqueeze(2).expand(-1, -1, self.views, -1, -1, -1).flatten(0, 2)  # [T·M·V, C, H, W]
        views = self.augment(copies, self.generator).view(*x.shape[:2], self.views, *x.shape[2:])
        return torch.cat([x.unsqueeze(2), views], dim=2).flatten(1, 2)

    def episode(self, raw: Episode, prepare: Callable[[torch.Tensor], torch.Tensor] | None) -> Episode:
        """The episode of `raw` ([0, 1] images) with every image's views, then `prepare`d (normalised). The views
        are drawn task by task, support then query, so a task's views do not depend on the tasks batched with it."""
        prepare = prepare or (lambda x: x)
        repeat, shots = self.views + 1, raw.support_x.shape[1] * (self.views + 1)
        x = prepare(self.expand(torch.cat([raw.support_x, raw.query_x], dim=1)))  # [T, (S+Q)·(V+1), C, H, W]
        return Episode(
            support_x=x[:, :shots],
            support_y=raw.support_y.repeat_interleave(repeat, dim=1),
            query_x=x[:, shots:],
            query_y=raw.query_y.repeat_interleave(repeat, dim=1),
            n_way=raw.n_way,
        )

    def pool(self, logits: torch.Tensor) -> torch.Tensor:
        """[T, Q·(V+1), N] logits of every view -> [T, Q, N] mean log-probabilities of each query's views."""
        per_view = logits.log_softmax(-1).unflatten(1, (-1, self.views + 1))
        return per_view.mean(2)
