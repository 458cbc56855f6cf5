"""Relation Network (Sung, Yang, Zhang, Xiang, Torr & Hospedales, "Learning to Compare", CVPR 2018).

A learned relation module g scores how well a query matches each class, from their feature maps:

    C_k = sum_{i: y_i = k} f(x_i)                          (class feature map; `class_feature: mean` averages)
    r_{j,k} = g([C_k, f(x_j)]) in [0, 1]                    (channel concatenation, sigmoid output)
    loss = mean_{j,k} (r_{j,k} - [y_j = k])^2               (MSE on one-hot targets; the paper sums)

f is the encoder without its final flatten, with only the first `pooled_blocks` blocks max-pooling (the paper:
the first 2 of Conv-4, so a 28 px image keeps a 7x7 map). g is two [conv3x3 - BN - ReLU - maxpool2] blocks, then
FC-ReLU-FC-sigmoid, as in the paper; a block skips its pooling on a 1x1 map, and a global average pool before
the FC layers makes g accept any map size (it is the identity on the 1x1 map left by 28 px inputs).

`forward` returns the scores r as the logits [T, N*Q, N] (argmax = prediction). The first convolution of g is
linear in its concatenated input, so it is applied to the N class maps and the Q query maps separately and the
results are added per pair: the same numbers as convolving all N*Q concatenated pairs, at a fraction of the
cost. In eval mode the rest of g runs over a bounded number of pairs at a time (BN then uses running
statistics, so chunking does not change the result).

Configurable: pooled_blocks, class_feature (sum | mean), hidden (conv channels of g), fc_hidden. The encoder
must provide `features(x, pooled_blocks)` and `out_channels` (Conv-4 and ResNet-12 do).
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
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register

EVAL_PAIRS = 4096  # (query, class) pairs per pass through the relation module in eval mode


class ClassFeature(Enum):
    sum = "sum"
    mean = "mean"


@register("algorithm", "relation")
@dataclass
class RelationConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.relation.RelationNetwork"
    pooled_blocks: int | None = 2  # encoder blocks that max-pool (Sung et al.: the first 2: 7x7 at 28 px); None = all
    class_feature: ClassFeature = ClassFeature.sum  # how K support maps make a class map
    hidden: int = 64  # channels of the relation module's two conv blocks
    fc_hidden: int = 8  # width of its hidden fully connected layer


class RelationNetwork(FewShotAlgorithm):
    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        return False  # the `distance` group is not used

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        pooled_blocks: int | None = 2,
        class_feature: object = "sum",
        hidden: int = 64,
        fc_hidden: int = 8,
    ):
        super().__init__(encoder, distance)
        if not (hasattr(encoder, "features") and hasattr(encoder, "out_channels")):
            raise UserError(
                f"algorithm=relation needs feature maps, which encoder {type(encoder).__name__} does not "
                "provide; use encoder=conv4 or encoder=resnet12"
            )
        if pooled_blocks is not None and getattr(encoder, "downsample", "maxpool") == "stride":
            raise UserError(
                "algorithm.pooled_blocks needs max-pooling blocks, and encoder.downsample=stride has none; "
                "use encoder.downsample=maxpool or algorithm.pooled_blocks=null"
            )
        if getattr(encoder, "pooled_blocks", None) is not None:
            raise UserError(
                "encoder.pooled_blocks is not read by algorithm=relation, which pools its encoder's blocks itself; "
                "set algorithm.pooled_blocks instead"
            )
        if pooled_blocks is not None and not 0 <= pooled_blocks <= 4:  # Conv-4 and ResNet-12 have 4 blocks
            raise UserError(f"algorithm.pooled_blocks must be in 0..4 or null (= all 4), got {pooled_blocks}")
        self.class_feature = option(class_feature)
        if self.class_feature not in ("sum", "mean"):
            raise UserError(f"algorithm.class_feature must be sum or mean, got {self.class_feature!r}")
        if hidden < 1 or fc_hidden < 1:
            raise UserError(f"algorithm.hidden and algorithm.fc_hidden must be positive, got {hidden} and {fc_hidden}")
        self.pooled_blocks = pooled_blocks
        channels = encoder.out_channels
        self.first = nn.Conv2d(2 * channels, hidden, 3, padding=1)  # on [class map, query map]
        self.first_rest = nn.Sequential(nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.second = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(nn.Linear(hidden, fc_hidden), nn.ReLU(inplace=True), nn.Linear(fc_hidden, 1))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Images [T, M, C, H, W] -> feature maps [T, M, c, h, w] (`per_task`)."""
        return self.per_task(lambda images: self.encoder.features(images, self.pooled_blocks), x, self.encoder)

    def class_maps(self, support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
        """Support maps [T, S, c, h, w] -> class maps [T, N, c, h, w] (sum or mean per class)."""
        one_hot = F.one_hot(support_y, n_way).to(support.dtype).transpose(1, 2)  # [T, N, S]
        sums = (one_hot @ support.flatten(2)).unflatten(2, support.shape[2:])
        if self.class_feature == "mean":
            sums = sums / one_hot.sum(2).clamp_min(1)[..., None, None, None]
        return sums

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x

    def relation_from_first(self, x: torch.Tensor) -> torch.Tensor:
        """The relation module after its first convolution: [P, hidden, h, w] -> scores [P]."""
        x = self.pool(self.second(self.pool(self.first_rest(x))))
        return torch.sigmoid(self.head(x.mean((-2, -1)))).squeeze(-1)

    def relation_scores(self, class_maps: torch.Tensor, query_maps: torch.Tensor) -> torch.Tensor:
        """r_{j,k} = g([C_k, f(x_j)]): class maps [T, N, c, h, w], query maps [T, Q, c, h, w] -> [T, Q, N]."""
        t, n, q = class_maps.shape[0], class_maps.shape[1], query_maps.shape[1]
        w_class, w_query = self.first.weight.split(class_maps.shape[2], 1)
        a = F.conv2d(class_maps.flatten(0, 1), w_class, self.first.bias, padding=1).unflatten(0, (t, n))
        b = F.conv2d(query_maps.flatten(0, 1), w_query, None, padding=1).unflatten(0, (t, q))
        step = 1 if self.training else max(1, EVAL_PAIRS // (n * q))  # tasks per pass: its own batch norm per task
        scores = []
        for start in range(0, t, step):
            pairs = b[start : start + step].unsqueeze(2) + a[start : start + step].unsqueeze(
                1
            )  # [t', Q, N, hidden, h, w]
            scores.append(self.relation_from_first(pairs.flatten(0, 2)).view(-1, q, n))
        return torch.cat(scores)

    def forward(self, episode: Episode) -> torch.Tensor:
        n_support = episode.support_x.shape[1]
        maps = self.feature_maps(torch.cat([episode.support_x, episode.query_x], 1))
        class_maps = self.class_maps(maps[:, :n_support], episode.support_y, episode.n_way)
        return self.relation_scores(class_maps, maps[:, n_support:])

    def loss(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Mean squared error between the relation scores and the one-hot query labels."""
        return F.mse_loss(logits, F.one_hot(episode.query_y, episode.n_way).to(logits.dtype))

    def episode_losses(self, logits: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Each task's mean squared error [T]."""
        return (logits - F.one_hot(episode.query_y, episode.n_way).to(logits.dtype)).pow(2).mean((1, 2))
