"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class prototype is the mean embedding of its support images,

    c_k = 1/|S_k| * sum_{(x_i, y_i) in S_k} f(x_i),

and a query x is classified by a softmax over (negative) distances to the prototypes,

    p(y = k | x) = softmax_k( -d(f(x), c_k) / t ).

Configurable: the distance (`distance=l2|cosine|dot`, squared Euclidean by default as in the paper)
and its temperature t (fixed or learned), through the `distance` config group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm, class_means
from fewshot_exp.data.episodes import Episode
from fewshot_exp.plugins import register


@register("algorithm", "protonet")
@dataclass
class ProtoNetConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.protonet.ProtoNet"


class ProtoNet(FewShotAlgorithm):
    def prototypes(self, support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
        return class_means(support, support_y, n_way)  # [T, N, D]

    def forward(self, episode: Episode) -> torch.Tensor:
        support, query = self.embed_episode(episode)
        return self.distance(query, self.prototypes(support, episode.support_y, episode.n_way))
