"""What every few-shot algorithm shares: episode in, query logits out.

An algorithm is an `nn.Module` built from an encoder and a distance; `forward(episode)` returns
logits [T, N*Q, N] for the query images of each task. The training loop and the evaluation
protocol only ever call `forward` and `loss`, so they never know which algorithm runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from fewshot_exp.data.episodes import Episode
from fewshot_exp.precision import float32


@float32
def class_means(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class: embeddings [T, S, D], labels [T, S] -> [T, N, D]."""
    one_hot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [T, S, N]
    sums = one_hot.transpose(1, 2) @ embeddings  # [T, N, D]
    return sums / one_hot.sum(1).unsqueeze(-1).clamp_min(1)


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@dataclass
class AlgorithmConfig:
    """The schema every algorithm's config extends (`fewshot_exp.plugins.register`): `_target_` names its class,
    which Hydra builds with `encoder=`, `distance=` and one keyword argument per key, but `members`."""

    _target_: str = MISSING
    #: M > 1: an ensemble of M independently initialised and trained copies (fewshot_exp/algorithms/ensemble.py)
    members: int = 1


class FewShotAlgorithm(nn.Module):
    #: Relabelling the classes of an episode permutes the logit columns (false for a learned per-label head init).
    label_equivariant: bool = True
    #: Draws random numbers in forward (tasks of a batch then see different draws than when run alone).
    stochastic: bool = False

    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        """Whether the `distance` group changes what this algorithm computes, given its config node `options`."""
        return True

    def __init__(self, encoder: nn.Module, distance: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.distance = distance

    def per_task(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """`fn` on the images of each task, [T, M, ...] -> [T, M, ...]: one pass per task when training through
        batch norm (`module` has some), so that its batch statistics are each task's own, as when the task runs
        alone; one pass for all tasks otherwise (running statistics, or none: the same numbers, faster)."""
        if self.training and x.shape[0] > 1 and has_batch_norm(module):
            return torch.stack([fn(task) for task in x])
        return fn(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [T, M, C, H, W] -> embeddings [T, M, D] (`per_task`)."""
        return self.per_task(self.encoder, x, self.encoder)

    def embed_episode(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """(support [T, N*K, D], query [T, N*Q, D]) embeddings from a single encoder pass."""
        n_support = episode.support_x.shape[1]
        z = self.embed(torch.cat([episode.support_x, episode.query_x], 1))
        return z[:, :n_support], z[:, n_support:]

    def forward(self, episode: Episode) -> torch.Tensor:  # [T, N*Q, N]
        raise NotImplementedError

    def explain(self, episode: Episode) -> dict[str, torch.Tensor]:
        """What the embedding plot (fewshot_exp/viz.py) shows: support [T, N*K, D] and query [T, N*Q, D]
        embeddings, prototypes [T, P, D] with their classes `prototype_labels` [T, P] (here the class means of the
        support embeddings) and the query `logits`. Algorithms with other points to show override it; for a
        gradient-based learner these are the meta-learned encoder's embeddings, before adaptation."""
        support, query = self.embed_episode(episode)
        labels = torch.arange(episode.n_way, device=support.device).expand(episode.tasks, -1)
        return {
            "support": support,
            "query": query,
            "prototypes": class_means(support, episode.support_y, episode.n_way),
            "prototype_labels": labels,
            "logits": self(episode),
        }

    def loss(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Mean cross-entropy over all query images of all tasks."""
        return F.cross_entropy(logits.flatten(0, 1), episode.query_y.flatten())

    def episode_losses(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Each task's own `loss` [T] (their mean is `loss` of the whole episode): evaluation's val/loss and
        test/loss, so that they mean what train/loss means for every algorithm."""
        return F.cross_entropy(logits.transpose(1, 2), episode.query_y, reduction="none").mean(1)

    def gradient_step(
        self, episode: Episode, optimizer: torch.optim.Optimizer, forward_context: Callable[[], Any] = nullcontext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain training step: forward and `loss` (inside `forward_context()`, the loop's autocast), then the
        gradients cleared (set to None), backward and a step of `optimizer`; returns (loss, logits). A parameter left
        without a gradient, such as another ensemble member's, is not moved."""
        with forward_context():
            logits = self(episode)
            loss = self.loss(logits, episode)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, logits

    def meta_update(
        self, episode: Episode, optimizer: torch.optim.Optimizer, lr_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One training step for an algorithm whose outer update is not `loss.backward(); optimizer.step()`
        (Reptile): update the parameters and return (loss, logits) to log. None: use `gradient_step`.
        `lr_scale` is the learning-rate schedule's current factor, for an update that is not the optimizer's."""
        return None
