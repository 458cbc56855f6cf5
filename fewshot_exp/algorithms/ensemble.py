"""An ensemble of independently trained copies of one algorithm (`algorithm.members=M`, any algorithm).

The M members are built alike and initialised apart (each draws its own initial weights from the run's seeded
generator). They train on the same episodes, each on its own loss and through its own update, so they stay
independent models: after an episode each member's weights are what training it alone on those episodes, from its
own start, would have given (the optimizer keeps its state per parameter, and each member steps only its own). The
ensemble predicts by the mean of the members' probabilities,

    p(y = k | x) = 1/M * sum_m p_m(y = k | x),

the deep-ensemble average of Lakshminarayanan, Pritzel & Blundell (NeurIPS 2017); its logits are log p. Its loss,
logged as train/loss, val/loss and test/loss, is the cross-entropy of that mean. Diversity comes from the
initialisation alone; the cost is M times one member's, in time and in parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.data.episodes import Episode


def mean_probabilities(logits: list[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of the members' softmax probabilities: M logits [T, Q, N] -> [T, Q, N], in float32 at
    least (bf16 logits under `train.amp` too)."""
    log_probs = torch.stack([m.to(torch.promote_types(m.dtype, torch.float32)).log_softmax(-1) for m in logits])
    return torch.logsumexp(log_probs, 0) - math.log(len(logits))


class Ensemble(FewShotAlgorithm):
    """M members of one algorithm, trained independently on the same episodes, predicting by their mean
    probability (see the module docstring)."""

    def __init__(self, members: list[FewShotAlgorithm]):
        nn.Module.__init__(self)  # no encoder or distance of its own: the members hold theirs
        self.members = nn.ModuleList(members)
        self.label_equivariant = all(m.label_equivariant for m in members)
        self.stochastic = any(m.stochastic for m in members)

    @property
    def encoder(self) -> nn.Module:
        """The first member's encoder: what code that inspects an algorithm's encoder (its output size) reads."""
        return self.members[0].encoder

    def forward(self, episode: Episode) -> torch.Tensor:
        return mean_probabilities([member(episode) for member in self.members])

    def meta_update(
        self, episode: Episode, optimizer: torch.optim.Optimizer, lr_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's own update on the episode, one after the other: its `meta_update` where it has one, else
        its `gradient_step` with the shared optimizer. Gradients are cleared (set to None) before each, so a step
        moves only the member whose gradients it holds. Returns the ensemble's loss and logits."""
        logits = []
        for member in self.members:
            update = member.meta_update(episode, optimizer, lr_scale)
            if update is None:
                update = member.gradient_step(episode, optimizer)
            logits.append(update[1].detach())
        pooled = mean_probabilities(logits)
        return self.loss(pooled, episode), pooled

    def explain(self, episode: Episode) -> dict[str, torch.Tensor]:
        """The first member's embeddings and prototypes (the members embed in spaces of their own), with the
        ensemble's logits."""
        return {**self.members[0].explain(episode), "logits": self(episode)}
