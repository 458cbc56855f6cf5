"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

A query x^ is labelled by attention over the support set S = {(x_i, y_i)}:

    a(x^, x_i) = exp(c(f(x^), g(x_i))) / sum_j exp(c(f(x^), g(x_j)))
    P(y = k | x^, S) = sum_i a(x^, x_i) [y_i = k]

with c the cosine similarity in the paper. `forward` returns log P(y = k | x^, S) as the logits, so the
shared cross-entropy loss is the negative log-likelihood of P, the paper's training objective.

Full-context embeddings (`fce: true`, the paper's appendix A), on top of the encoder's embeddings g'(x_i), f'(x^):

    support:  g(x_i, S) = h->_i + h<-_i + g'(x_i)       a bidirectional LSTM over the support set, with a skip
    query:    h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1})      for k = 1..K (`fce_steps`)
              h_k = h^_k + f'(x^)
              r_{k-1} = sum_i softmax_i(h_{k-1} . g(x_i, S)) g(x_i, S)
              f(x^, S) = h_K                              (h_0 = f'(x^), c_0 = 0)

The LSTM reads [h, r] as its hidden state: its gates are a linear map of [f'(x^), h, r], which is an LSTM cell
with input [f'(x^), r] and hidden h.

Order of the support set: without FCE the output does not depend on it. With FCE the attention LSTM does not
either (its readout r is a sum over the support set), but the BiLSTM does: it reads the support embeddings as a
sequence in the episode's order (class-major from the sampler), so permuting the support set changes g and
with it the logits. The BiLSTM runs over each task's own support set (tasks are its batch dimension), so tasks
of a batch never mix.

Configurable:
  similarity  cosine (default): softmax over raw cosine similarities, as in the paper; the `distance` config
              group is then not used. `distance`: the `distance` group's logits (l2 / cosine / dot with its
              temperature), e.g. `algorithm.similarity=distance distance=l2`.
  fce, fce_steps (K), fce_layers (BiLSTM layers).
The LSTM sizes equal the embedding dimension (needed by the skip connections); it is read from the first
episode, so the FCE parameters are materialised on the first forward (a torch lazy module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm
from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import cosine_similarity
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


def option(value: object) -> str:
    """An enum config value (or its plain string) as a string."""
    return value.value if isinstance(value, Enum) else str(value)


def lstm_step(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM cell step (gate order i, f, g, o as in torch.nn.LSTM)."""
    i, f, g, o = (x @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def label_log_probs(scores: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """log sum_i softmax_i(scores)_i [y_i = k]: scores [T, Q, S], support_y [T, S] -> [T, Q, N], computed stably."""
    same = F.one_hot(support_y, n_way).transpose(1, 2).unsqueeze(1).bool()  # [T, 1, N, S]
    per_class = scores.unsqueeze(2).masked_fill(~same, -math.inf).logsumexp(-1)  # [T, Q, N]
    return per_class - scores.logsumexp(-1, keepdim=True)


class FullContextEmbedding(LazyModuleMixin, nn.Module):
    """The support BiLSTM g(., S) and the query attention LSTM f(., S); the size D comes from the first call."""

    cls_to_become = None

    def __init__(self, steps: int, layers: int):
        super().__init__()
        self.steps, self.layers = steps, layers
        # Named like torch.nn.LSTM's: weight_ih_l0, weight_hh_l0, bias_l0, ..._reverse; then the attention LSTM's.
        for name in [*self.bilstm_names(), "attention_weight_ih", "attention_weight_hh", "attention_bias"]:
            self.register_parameter(name, UninitializedParameter())

    def bilstm_names(self, layer: int | None = None, direction: int | None = None) -> list[str]:
        layers = range(self.layers) if layer is None else [layer]
        directions = range(2) if direction is None else [direction]
        return [
            f"{kind}_l{i}{'_reverse' * d}"
            for i in layers
            for d in directions
            for kind in ("weight_ih", "weight_hh", "bias")
        ]

    def bilstm_weights(self, layer: int, direction: int) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.bilstm_names(layer, direction)]

    def initialize_parameters(self, support: torch.Tensor, query: torch.Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        d = support.shape[-1]
        with torch.no_grad():
            for layer in range(self.layers):
                for direction in range(2):
                    w_ih, w_hh, b = self.bilstm_weights(layer, direction)
                    w_ih.materialize((4 * d, d if layer == 0 else 2 * d))
                    w_hh.materialize((4 * d, d))
                    b.materialize((4 * d,))
            self.attention_weight_ih.materialize((4 * d, 2 * d))
            self.attention_weight_hh.materialize((4 * d, d))
            self.attention_bias.materialize((4 * d,))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        bound = 1 / math.sqrt(self.attention_weight_hh.shape[1])  # torch.nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def embed_support(self, support: torch.Tensor) -> torch.Tensor:
        """g(x_i, S) = h->_i + h<-_i + g'(x_i): support [T, S, D] -> [T, S, D]."""
        x, n = support, support.shape[1]
        for layer in range(self.layers):
            hidden = []  # per direction, [T, S, D]
            for direction in range(2):
                w_ih, w_hh, b = self.bilstm_weights(layer, direction)
                h = c = support.new_zeros(support.shape[0], w_hh.shape[1])  # [T, D]
                hs: list[torch.Tensor] = [h] * n
                for i in range(n) if direction == 0 else reversed(range(n)):
                    h, c = lstm_step(x[:, i], h, c, w_ih, w_hh, b)
                    hs[i] = h
                hidden.append(torch.stack(hs, 1))
            x = torch.cat(hidden, -1)  # the next layer reads both directions
        return hidden[0] + hidden[1] + support

    def embed_query(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """f(x^, S) = h_K of the attention LSTM: query [T, Q, D], support g(x_i, S) [T, S, D] -> [T, Q, D]."""
        w_ih, w_hh, b = self.attention_weight_ih, self.attention_weight_hh, self.attention_bias
        h, c = query, torch.zeros_like(query)
        for _ in range(self.steps):
            attention = (h @ support.transpose(1, 2)).softmax(-1)  # [T, Q, S]
            readout = attention @ support  # [T, Q, D]
            h_hat, c = lstm_step(torch.cat([query, readout], -1), h, c, w_ih, w_hh, b)
            h = h_hat + query
        return h

    def forward(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        support = self.embed_support(support)
        return support, self.embed_query(query, support)


class MatchingSimilarity(Enum):
    cosine = "cosine"  # the paper's softmax over raw cosine similarities
    distance = "distance"  # the `distance` config group (l2 / cosine / dot with its temperature)


@register("algorithm", "matching")
@dataclass
class MatchingConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.matching.MatchingNetwork"
    similarity: MatchingSimilarity = MatchingSimilarity.cosine
    fce: bool = False  # full-context embeddings: support BiLSTM + query attention LSTM
    fce_steps: int = 5  # unrolling steps of the attention LSTM
    fce_layers: int = 1  # layers of the support BiLSTM


class MatchingNetwork(FewShotAlgorithm):
    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        return option(options.get("similarity", "cosine")) == "distance"

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        similarity: object = "cosine",
        fce: bool = False,
        fce_steps: int = 5,
        fce_layers: int = 1,
    ):
        super().__init__(encoder, distance)
        self.similarity = option(similarity)
        if self.similarity not in ("cosine", "distance"):
            raise UserError(f"algorithm.similarity must be cosine or distance, got {self.similarity!r}")
        if fce and (fce_steps < 1 or fce_layers < 1):
            raise UserError(
                f"algorithm.fce_steps and algorithm.fce_layers must be at least 1, got {fce_steps} and {fce_layers}"
            )
        self.fce = FullContextEmbedding(fce_steps, fce_layers) if fce else None

    def attention_scores(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention c(f(x^), g(x_i)): [T, Q, D], [T, S, D] -> [T, Q, S]."""
        if self.similarity == "cosine":
            return cosine_similarity(query, support)
        return self.distance(query, support)

    def forward(self, episode: Episode) -> torch.Tensor:
        support, query = self.embed_episode(episode)
        if self.fce is not None:
            support, query = self.fce(support, query)
        return label_log_probs(self.attention_scores(query, support), episode.support_y, episode.n_way)
