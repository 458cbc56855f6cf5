"""Distances between query embeddings and class prototypes, as logits.

    l2:     logit = -||q - p||^2 / t      (squared Euclidean, Snell et al. 2017)
    cosine: logit =  cos(q, p) / t
    dot:    logit =  q . p / t

All take queries [T, Q, D] and prototypes [T, N, D] and return logits [T, Q, N]. The temperature t
is fixed or learned (stored as log t so it stays positive).

A distance is one function decorated with `@similarity("<name>")`: that adds it to `SIMILARITIES` and makes
`distance=<name>` an option of the `distance` group (schema `DistanceConfig`), here or in a user's plugin module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_exp.plugins import register_option, register_schema
from fewshot_exp.precision import float32

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: name -> similarity of queries [T, Q, D] and prototypes [T, N, D], [T, Q, N], larger meaning closer
SIMILARITIES: dict[str, Similarity] = {}


@dataclass
class DistanceConfig:
    name: str = "l2"  # a registered similarity: l2 | cosine | dot, or a plugin's
    temperature: float = 1.0  # logits = similarity / temperature
    learn_temperature: bool = False


register_schema("distance", "distance", DistanceConfig)


def similarity(name: str, temperature: float = 1.0) -> Callable[[Similarity], Similarity]:
    """Function decorator: `SIMILARITIES[name]` and the option `distance=<name>`, at that default temperature."""

    def add(fn: Similarity) -> Similarity:
        SIMILARITIES[name] = fn
        register_option("distance", name, DistanceConfig(name=name, temperature=temperature))
        return fn

    return add


@float32
def squared_euclidean(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    # ||q||^2 - 2 q.p + ||p||^2, one batched matmul instead of a [T, Q, N, D] difference tensor.
    q2 = queries.pow(2).sum(-1, keepdim=True)  # [T, Q, 1]
    p2 = prototypes.pow(2).sum(-1).unsqueeze(1)  # [T, 1, N]
    return (q2 - 2 * queries @ prototypes.transpose(1, 2) + p2).clamp_min(0)


@similarity("l2")
def negative_squared_euclidean(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return -squared_euclidean(queries, prototypes)


@similarity("cosine", temperature=0.1)  # cosines lie in [-1, 1]: sharpened tenfold
@float32
def cosine_similarity(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return F.normalize(queries, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)


@similarity("dot")
@float32
def dot_product(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return queries @ prototypes.transpose(1, 2)


class Distance(nn.Module):
    def __init__(self, name: str = "l2", temperature: float = 1.0, learn_temperature: bool = False):
        super().__init__()
        self.name = name
        self.similarity = SIMILARITIES[name]
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.similarity(queries, prototypes) / self.log_temperature.exp()
