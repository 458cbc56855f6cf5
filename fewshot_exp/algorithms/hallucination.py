"""Data hallucination with a ProtoNet classifier (Wang, Girshick, Hebert & Hariharan, "Low-shot learning from
imaginary data", CVPR 2018).

A generator G turns a real support embedding and noise into a new embedding of the same class,

    x'_{k,m} = G([f(x_seed), z]),   z ~ N(0, I),   x_seed drawn uniformly from class k's support images,

M of them per class (`n_hallucinated`) join the support set, and ProtoNet classifies on the augmented set:

    c_k = ( sum_{i: y_i = k} f(x_i) + sum_{m=1..M} x'_{k,m} ) / (K + M)
    p(y = k | x) = softmax_k( -d(f(x), c_k) / t )

The encoder f and G are trained jointly, end to end, by the queries' cross-entropy: its gradient reaches G
through the generated points and the encoder through the queries, the real support and the seeds. M = 0 is plain
ProtoNet, bit for bit (the generator is then not used).

G is a three-layer MLP with leaky ReLU, [D + noise_dim] -> hidden -> hidden -> D. It starts (our choice) as the
identity on the seed plus a small noise term (when hidden >= D; exactly so on non-negative seeds, as the leaky
ReLUs scale negative coordinates by 0.2), so training begins as ProtoNet with jittered
copies of real support points rather than with M random points per class; with hidden < D it gets torch's
default Linear initialisation. D is read from the first episode (G is a torch lazy module).

Randomness: seeds and noise come from torch's global RNG, which the run seeds (`seed`), so a run is
reproducible. They are drawn task by task, and the M slots of each class are assigned to the classes in the order
in which they first appear in the support set, so the draws do not depend on the label values (relabelling the
classes permutes the logits exactly). Evaluation hallucinates too, as the paper does for the novel classes at
test time; test accuracy therefore includes the generator's randomness (a fixed seed still gives fixed numbers).

Configurable: n_hallucinated (M >= 0), noise_dim and hidden (None = D), and the `distance` group as for ProtoNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from fewshot_exp.algorithms.base import AlgorithmConfig
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.data.episodes import Episode
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register

NEGATIVE_SLOPE = 0.2
INIT_NOISE_SCALE = 0.1  # std of the noise term G adds at initialisation (hidden >= D)


class Generator(LazyModuleMixin, nn.Module):
    """G([seed, z]): seeds [..., D], noise [..., noise_dim] -> [..., D]; sizes come from the first call."""

    cls_to_become = None

    def __init__(self, hidden: int | None = None):
        super().__init__()
        self.hidden = hidden
        for name in ("weight1", "bias1", "weight2", "bias2", "weight3", "bias3"):
            self.register_parameter(name, UninitializedParameter())

    def initialize_parameters(self, seeds: torch.Tensor, noise: torch.Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        d, dz = seeds.shape[-1], noise.shape[-1]
        h = self.hidden or d
        with torch.no_grad():
            for i, (n_out, n_in) in enumerate([(h, d + dz), (h, h), (d, h)], start=1):
                getattr(self, f"weight{i}").materialize((n_out, n_in))
                getattr(self, f"bias{i}").materialize((n_out,))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        d, h = self.weight3.shape
        dz = self.weight1.shape[1] - d
        with torch.no_grad():
            for i in (1, 2, 3):  # torch.nn.Linear's initialisation
                weight, bias = getattr(self, f"weight{i}"), getattr(self, f"bias{i}")
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                nn.init.uniform_(bias, -1 / math.sqrt(weight.shape[1]), 1 / math.sqrt(weight.shape[1]))
            if h >= d:  # identity on the seed, plus a small noise term
                self.weight1.zero_()
                self.weight1[:d, :d] = torch.eye(d)
                self.weight1[:, d:].normal_(0, INIT_NOISE_SCALE / math.sqrt(dz))
                self.weight2.copy_(torch.eye(h))
                self.weight3.zero_()
                self.weight3[:, :d] = torch.eye(d)
                for i in (1, 2, 3):
                    getattr(self, f"bias{i}").zero_()

    def forward(self, seeds: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = torch.cat([seeds, noise], -1)
        x = F.leaky_relu(F.linear(x, self.weight1, self.bias1), NEGATIVE_SLOPE)
        x = F.leaky_relu(F.linear(x, self.weight2, self.bias2), NEGATIVE_SLOPE)
        return F.linear(x, self.weight3, self.bias3)


@register("algorithm", "hallucination")
@dataclass
class HallucinationConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.hallucination.Hallucination"
    n_hallucinated: int = 10  # M generated embeddings per class added to the support set; 0 = plain ProtoNet
    noise_dim: int | None = None  # None = the embedding dimension
    hidden: int | None = None  # generator hidden width; None = the embedding dimension


class Hallucination(ProtoNet):
    stochastic = True

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        n_hallucinated: int = 10,
        noise_dim: int | None = None,
        hidden: int | None = None,
    ):
        super().__init__(encoder, distance)
        if n_hallucinated < 0:
            raise UserError(f"algorithm.n_hallucinated must be >= 0, got {n_hallucinated}")
        for name, value in (("noise_dim", noise_dim), ("hidden", hidden)):
            if value is not None and value < 1:
                raise UserError(f"algorithm.{name} must be positive or null (= the embedding dimension), got {value}")
        self.n_hallucinated = n_hallucinated
        self.noise_dim = noise_dim
        self.generator = Generator(hidden)

    def draw(self, support_y: torch.Tensor, n_way: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Seed indices [T, N*M], their classes [T, N*M] and noise [T, N*M, noise_dim], drawn task by task."""
        t, s = support_y.shape
        m, dz, device = self.n_hallucinated, self.noise_dim or dim, support_y.device
        draws = [(torch.rand(n_way * m, s, device=device), torch.randn(n_way * m, dz, device=device)) for _ in range(t)]
        keys = torch.stack([k for k, _ in draws])  # [T, N*M, S]
        noise = torch.stack([z for _, z in draws])  # [T, N*M, dz]
        # Classes in order of first appearance in the support set; slot j hallucinates for the (j // M)-th.
        position = torch.arange(s, device=device).expand(t, s)
        first = torch.full((t, n_way), s, device=device).scatter_reduce(1, support_y, position, "amin")  # [T, N]
        classes = first.argsort(1).repeat_interleave(m, 1)  # [T, N*M]
        same = support_y.unsqueeze(1) == classes.unsqueeze(2)  # [T, N*M, S]
        seeds = keys.masked_fill(~same, -1.0).argmax(-1)  # [T, N*M] uniform over the class's support images
        return seeds, classes, noise

    def augment(self, support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Support embeddings [T, S, D] and labels [T, S] with N*M hallucinated ones appended."""
        dim = support.shape[-1]
        if self.n_hallucinated == 0:
            if self.generator.has_uninitialized_params():  # materialise G so that checkpoints hold plain tensors
                self.generator(support[:, :0], support.new_zeros(support.shape[0], 0, self.noise_dim or dim))
            return support, support_y
        seeds, classes, noise = self.draw(support_y, n_way, dim)
        seed_embeddings = support.gather(1, seeds.unsqueeze(-1).expand(-1, -1, dim))  # [T, N*M, D]
        fake = self.generator(seed_embeddings, noise.to(support.dtype))  # [T, N*M, D]
        return torch.cat([support, fake], 1), torch.cat([support_y, classes], 1)

    def forward(self, episode: Episode) -> torch.Tensor:
        support, query = self.embed_episode(episode)
        support, support_y = self.augment(support, episode.support_y, episode.n_way)
        return self.distance(query, self.prototypes(support, support_y, episode.n_way))

    def explain(self, episode: Episode) -> dict[str, torch.Tensor]:
        """The real support and query embeddings, the hallucinated points [T, N*M, D] with their classes, the
        prototypes over both, and the query logits, all from the same draws."""
        support, query = self.embed_episode(episode)
        augmented, augmented_y = self.augment(support, episode.support_y, episode.n_way)
        prototypes = self.prototypes(augmented, augmented_y, episode.n_way)
        n_real = support.shape[1]
        return {
            "support": support,
            "query": query,
            "hallucinated": augmented[:, n_real:],
            "hallucinated_labels": augmented_y[:, n_real:],
            "prototypes": prototypes,
            "prototype_labels": torch.arange(episode.n_way, device=support.device).expand(episode.tasks, -1),
            "logits": self.distance(query, prototypes),
        }
