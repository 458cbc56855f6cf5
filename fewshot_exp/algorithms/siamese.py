"""Siamese network (Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition",
ICML Deep Learning Workshop 2015).

Two images share the encoder f; a learned score says whether they show the same class:

    p(a, b) = sigmoid( sum_j alpha_j |f(a)_j - f(b)_j| + beta )          (the paper's weighted L1 + sigmoid)

trained with binary cross-entropy on same/different pairs drawn from the episode:

    loss = 1/2 mean_{same pairs} -log p + 1/2 mean_{different pairs} -log(1 - p)

(positives and negatives weighted equally, since an N-way episode has about N - 1 times more negatives).
A query is classified by its most similar support image (one-shot verification as classification):

    logit_k(x) = log max_{i: y_i = k} p(x, x_i)

so exp(logits) are the pair scores in [0, 1]; they are returned in log space because they are compared, and
p underflows to 0 for clearly different pairs.

`loss: contrastive` (Hadsell, Chopra & LeCun 2006) learns a distance D instead of the alpha/beta head,

    loss = 1/2 mean_{same} D^2 + 1/2 mean_{different} max(0, margin - D)^2,    p(a, b) = exp(-D^2),

with D the Euclidean distance of the `distance` group scaled by its temperature t: D^2 = ||f(a) - f(b)||^2 / t
for `distance=l2`, and the same on L2-normalised embeddings for `distance=cosine` (D^2 = 2 (1 - cos) / t);
`distance=dot` is not a distance and is refused. With `loss: bce` the `distance` group is not used.

Pairs (`pairs`): `all` (default) uses every pair of distinct images of a task, support and query alike;
`support_query` uses query x support pairs only. Pairs never cross tasks.

Configurable: loss (bce | contrastive), pairs (all | support_query), margin. The alpha/beta head reads the
embedding dimension from the first episode (a torch lazy Linear).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm
from fewshot_exp.algorithms.matching import option
from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import squared_euclidean
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


class SiameseLoss(Enum):
    bce = "bce"  # binary cross-entropy on the learned pair score
    contrastive = "contrastive"  # contrastive loss on the `distance` group


class SiamesePairs(Enum):
    all = "all"  # every pair of images of a task (support and query)
    support_query = "support_query"  # query x support pairs only


@register("algorithm", "siamese")
@dataclass
class SiameseConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.siamese.SiameseNetwork"
    loss: SiameseLoss = SiameseLoss.bce
    pairs: SiamesePairs = SiamesePairs.all
    margin: float = 1.0  # contrastive loss margin


class SiameseNetwork(FewShotAlgorithm):
    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        return option(options.get("loss", "bce")) == "contrastive"

    def __init__(
        self, encoder: nn.Module, distance: nn.Module, loss: object = "bce", pairs: object = "all", margin: float = 1.0
    ):
        super().__init__(encoder, distance)
        self.loss_kind, self.pairs, self.margin = option(loss), option(pairs), margin
        if self.loss_kind not in ("bce", "contrastive"):
            raise UserError(f"algorithm.loss must be bce or contrastive, got {self.loss_kind!r}")
        if self.pairs not in ("all", "support_query"):
            raise UserError(f"algorithm.pairs must be all or support_query, got {self.pairs!r}")
        if self.loss_kind == "contrastive":
            if getattr(distance, "name", None) not in ("l2", "cosine"):
                raise UserError(
                    f"algorithm.loss=contrastive needs distance=l2 or distance=cosine, got "
                    f"distance={getattr(distance, 'name', type(distance).__name__)}"
                )
            if margin <= 0:
                raise UserError(f"algorithm.margin must be positive, got {margin}")
        self.head = nn.LazyLinear(1) if self.loss_kind == "bce" else None  # alpha, beta
        self._cache: tuple[Episode, torch.Tensor, torch.Tensor] | None = None

    def squared_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """D^2 of the contrastive loss: [T, A, D], [T, B, D] -> [T, A, B]."""
        if self.distance.name == "cosine":
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return squared_euclidean(a, b) / self.distance.log_temperature.exp()

    def log_scores(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """log p(a_i, b_j) for every pair of a task: [T, A, D], [T, B, D] -> [T, A, B]."""
        if self.head is None:
            return -self.squared_distance(a, b)
        return F.logsigmoid(self.pair_logits(a, b))

    def pair_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """sum_j alpha_j |a_j - b_j| + beta for every pair of a task: [T, A, D], [T, B, D] -> [T, A, B]."""
        return self.head((a.unsqueeze(2) - b.unsqueeze(1)).abs()).squeeze(-1)

    def forward(self, episode: Episode) -> torch.Tensor:
        support, query = self.embed_episode(episode)
        self._cache = (episode, support, query) if self.training and torch.is_grad_enabled() else None
        log_scores = self.log_scores(query, support)  # [T, Q, S]
        same = F.one_hot(episode.support_y, episode.n_way).transpose(1, 2).unsqueeze(1).bool()  # [T, 1, N, S]
        return log_scores.unsqueeze(2).masked_fill(~same, -torch.inf).amax(-1)  # [T, Q, N]

    def pairs_of(self, support: torch.Tensor, query: torch.Tensor, episode: Episode) -> tuple[torch.Tensor, ...]:
        """(a, b, is_same, used): the two sides of the pairs and [T, A, B] masks of same-class and counted pairs."""
        if self.pairs == "support_query":
            same = episode.query_y.unsqueeze(2) == episode.support_y.unsqueeze(1)  # [T, Q, S]
            return query, support, same, torch.ones_like(same)
        x = torch.cat([support, query], 1)  # [T, M, D]
        y = torch.cat([episode.support_y, episode.query_y], 1)  # [T, M]
        same = y.unsqueeze(2) == y.unsqueeze(1)
        m = y.shape[1]
        upper = torch.ones(m, m, dtype=torch.bool, device=y.device).triu(1).expand_as(same)  # each pair once
        return x, x, same, upper

    def loss(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Class-balanced pair loss (BCE or contrastive) on the episode's pairs; `logits` are not needed."""
        cache, self._cache = self._cache, None
        support, query = cache[1:] if cache is not None and cache[0] is episode else self.embed_episode(episode)
        a, b, same, used = self.pairs_of(support, query, episode)
        positive, negative = same & used, ~same & used
        if self.head is not None:
            z = self.pair_logits(a, b)
            loss_same, loss_different = F.softplus(-z), F.softplus(z)  # -log p, -log(1 - p)
        else:
            d2 = self.squared_distance(a, b)
            loss_same = d2
            loss_different = (self.margin - d2.clamp_min(1e-12).sqrt()).clamp_min(0).pow(2)
        return 0.5 * loss_same[positive].mean() + 0.5 * loss_different[negative].mean()

    def episode_losses(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Each task's pair loss [T], from its own pairs (its embeddings again: `loss` pools the tasks' pairs)."""
        return torch.stack([self.loss(logits[t : t + 1], episode.task(t)) for t in range(episode.tasks)])
