"""Multi-prototype classifier with a sparse prototype-to-class layer (after the interpretable multi-prototype CNN
classifier's "prototype matching layer followed by a sparse prototype-to-class soft-max"), trained end to end as a
few-shot learner.

After the encoder f, J >= N prototypes p_j in feature space and two soft-max layers:

    q_j(x) = softmax_j( -||f(x) - p_j||^2 / 2 )            prototype matching, q(x) in the simplex of R^J
    c_l(x) = softmax_l( w_l^T q(x) )                        prototype-to-class association, W in R^{N x J}

fitted on a sample {(x_i, l_i)} by the cross-entropy with a penalty on W,

    C = -1/n sum_i log c_{l_i}(x_i) + alpha * ||W||_1     (penalty: l1, sparse: one class per prototype)
    C = -1/n sum_i log c_{l_i}(x_i) + alpha * ||W||_2^2   (penalty: l2)

In an episode the prototypes start from the support set: k-means (`init: kmeans`, `per_class` = m centres per
class, farthest-point seeding then `kmeans_iters` Lloyd steps; m is capped at K) or every support point
(`init: support`, m = K), so J = N*m, and W starts as `scale` * [class of p_j = l], scale a learned
meta-parameter. Then `fit_steps` gradient steps on C over the support set (step `fit_lr` for the prototypes,
`weight_lr` for W; for l1 a proximal step, soft-thresholding W by weight_lr * alpha, which sets entries exactly to
0) fit (P, W) to the episode, and the queries are classified by c(x). The fit is differentiable (second order,
through torch.func.grad) or first order (`first_order: true`, its gradients treated as constants), so the
encoder and the scale are meta-trained by the queries' cross-entropy through the k-means centres, the fit and q.
With 0 steps, m = 1 and k-means, the prototypes are ProtoNet's class means and the predictions ProtoNet's.

The mass of prototype j on class l is softmax_l(W_{lj}), the class distribution of a sample matched to p_j
alone; a prototype's class is its argmax, and it is ambiguous when that mass is below `ambiguity` (it carries
several classes). `explain` returns this mapping per episode and `mapping_report` summarises it over episodes.

The `distance` group is not used: the matching is the paper's squared Euclidean distance / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import squared_euclidean
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register
from fewshot_exp.precision import float32

from .base import AlgorithmConfig, FewShotAlgorithm


class PrototypeInit(Enum):
    kmeans = "kmeans"
    support = "support"


class Penalty(Enum):
    l1 = "l1"
    l2 = "l2"


def by_class(support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Support embeddings [T, N*K, D] grouped by class -> [T, N, K, D] (support order kept within a class)."""
    t, s, d = support.shape
    counts = (support_y.unsqueeze(-1) == torch.arange(n_way, device=support_y.device)).sum(1)  # [T, N], per task
    if s % n_way or not (counts == s // n_way).all():
        raise UserError(f"multiproto needs the same number of support images in each of the {n_way} classes")
    order = support_y.argsort(dim=1, stable=True)
    return support.gather(1, order.unsqueeze(-1).expand(-1, -1, d)).view(t, n_way, s // n_way, d)


def kmeans(points: torch.Tensor, m: int, iters: int) -> torch.Tensor:
    """k-means of each set of K points [..., K, D] -> m centres [..., m, D]: farthest-point seeding from the
    first point, then `iters` Lloyd steps (a centre left without points stays where it was). Differentiable
    with respect to the points for fixed assignments."""
    d = points.shape[-1]
    chosen = torch.zeros(points.shape[:-2] + (1,), dtype=torch.long, device=points.device)
    for _ in range(m - 1):
        centres = points.gather(-2, chosen.unsqueeze(-1).expand(*chosen.shape, d))
        nearest = torch.cdist(points, centres).min(-1).values  # [..., K]
        chosen = torch.cat([chosen, nearest.argmax(-1, keepdim=True)], -1)
    centres = points.gather(-2, chosen.unsqueeze(-1).expand(*chosen.shape, d))  # [..., m, D]
    for _ in range(iters):
        assign = F.one_hot(torch.cdist(points, centres).argmin(-1), m).to(points.dtype)  # [..., K, m]
        counts = assign.sum(-2).unsqueeze(-1)  # [..., m, 1]
        means = assign.transpose(-1, -2) @ points / counts.clamp_min(1)
        centres = torch.where(counts > 0, means, centres)
    return centres


@register("algorithm", "multiproto")
@dataclass
class MultiProtoConfig(AlgorithmConfig):
    _target_: str = "fewshot_exp.algorithms.multiproto.MultiProto"
    init: PrototypeInit = PrototypeInit.kmeans
    per_class: int = 2  # k-means prototypes per class (capped at k_shot); J = n_way * per_class
    kmeans_iters: int = 3  # Lloyd steps after farthest-point seeding
    fit_steps: int = 3  # gradient steps on the support set per episode
    fit_lr: float = 0.1  # step size of the prototypes
    weight_lr: float = 1.0  # step size of the prototype-to-class weights W
    penalty: Penalty = Penalty.l1  # on W: l1 (proximal, sparse) or l2 (squared)
    alpha: float = 0.01  # penalty weight
    scale: float = 10.0  # initial scale of W = scale * one-hot (learned)
    first_order: bool = False  # treat the fit's gradients as constants
    ambiguity: float = 0.5  # a prototype whose top class mass is below this is ambiguous


class MultiProto(FewShotAlgorithm):
    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        return False  # the `distance` group is not used

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        init: PrototypeInit | str = "kmeans",
        per_class: int = 2,
        kmeans_iters: int = 3,
        fit_steps: int = 3,
        fit_lr: float = 0.1,
        weight_lr: float = 1.0,
        penalty: Penalty | str = "l1",
        alpha: float = 0.01,
        scale: float = 10.0,
        first_order: bool = False,
        ambiguity: float = 0.5,
    ):
        super().__init__(encoder, distance)
        for name, value in (("per_class", per_class), ("scale", scale)):
            if not 0 < value < math.inf:  # False for nan too
                raise UserError(f"algorithm.{name} must be positive, got {value}")
        for name, value in (("kmeans_iters", kmeans_iters), ("fit_steps", fit_steps), ("fit_lr", fit_lr)):
            if not 0 <= value < math.inf:
                raise UserError(f"algorithm.{name} must be >= 0, got {value}")
        for name, value in (("weight_lr", weight_lr), ("alpha", alpha)):
            if not 0 <= value < math.inf:
                raise UserError(f"algorithm.{name} must be >= 0, got {value}")
        if not 0 <= ambiguity <= 1:
            raise UserError(f"algorithm.ambiguity must be in [0, 1], got {ambiguity}")
        self.init = PrototypeInit(getattr(init, "value", init))
        self.penalty = Penalty(getattr(penalty, "value", penalty))
        self.per_class, self.kmeans_iters = per_class, kmeans_iters
        self.fit_steps, self.fit_lr, self.weight_lr, self.alpha = fit_steps, fit_lr, weight_lr, alpha
        self.first_order, self.ambiguity = first_order, ambiguity
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    # --- the model -----------------------------------------------------------------------------------------
    @staticmethod
    def matching(x: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """q(x) = softmax_j(-||x - p_j||^2 / 2): embeddings [T, M, D], prototypes [T, J, D] -> [T, M, J]."""
        return torch.softmax(-squared_euclidean(x, prototypes) / 2, -1)

    @float32
    def class_logits(self, x: torch.Tensor, prototypes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """w_l^T q(x), the logits of c(x) = softmax_l(w_l^T q(x)): weights [T, N, J] -> [T, M, N]."""
        return self.matching(x, prototypes) @ weights.transpose(1, 2)

    def init_prototypes(
        self, support: torch.Tensor, support_y: torch.Tensor, n_way: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prototypes [T, J, D] from the support set and the class each started from [T, J]."""
        grouped = by_class(support, support_y, n_way)  # [T, N, K, D]
        t, _, k, d = grouped.shape
        if self.init is PrototypeInit.kmeans:
            grouped = kmeans(grouped, min(self.per_class, k), self.kmeans_iters)
        m = grouped.shape[2]
        origin = torch.arange(n_way, device=support.device).repeat_interleave(m).expand(t, -1)
        return grouped.reshape(t, n_way * m, d), origin

    def init_weights(self, origin: torch.Tensor, n_way: int, dtype: torch.dtype) -> torch.Tensor:
        """W [T, N, J] = scale * [class of p_j = l]."""
        return self.log_scale.exp() * F.one_hot(origin, n_way).to(dtype).transpose(1, 2)

    def support_objective(
        self, prototypes: torch.Tensor, weights: torch.Tensor, support: torch.Tensor, support_y: torch.Tensor
    ) -> torch.Tensor:
        """C summed over tasks (each task's gradient is its own): mean cross-entropy (+ alpha ||W||_2^2)."""
        logits = self.class_logits(support, prototypes, weights)
        ce = F.cross_entropy(logits.transpose(1, 2), support_y, reduction="none").mean(1).sum()
        if self.penalty is Penalty.l2:
            ce = ce + self.alpha * weights.pow(2).sum()
        return ce

    def fit(
        self, prototypes: torch.Tensor, weights: torch.Tensor, support: torch.Tensor, support_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`fit_steps` (proximal) gradient steps on C over the support set."""
        step = grad(self.support_objective, argnums=(0, 1))
        for _ in range(self.fit_steps):
            g_p, g_w = step(prototypes, weights, support, support_y)
            if self.first_order:
                g_p, g_w = g_p.detach(), g_w.detach()
            prototypes = prototypes - self.fit_lr * g_p
            weights = weights - self.weight_lr * g_w
            if self.penalty is Penalty.l1:  # proximal step of alpha ||W||_1: soft-thresholding
                weights = weights.sign() * (weights.abs() - self.weight_lr * self.alpha).clamp_min(0)
        return prototypes, weights

    @float32
    def fitted(self, support: torch.Tensor, support_y: torch.Tensor, n_way: int):
        """(prototypes [T, J, D], W [T, N, J], origin class [T, J]) fitted to the support set."""
        prototypes, origin = self.init_prototypes(support, support_y, n_way)
        weights = self.init_weights(origin, n_way, support.dtype)
        prototypes, weights = self.fit(prototypes, weights, support, support_y)
        return prototypes, weights, origin

    def forward(self, episode: Episode) -> torch.Tensor:
        support, query = self.embed_episode(episode)
        prototypes, weights, _ = self.fitted(support, episode.support_y, episode.n_way)
        return self.class_logits(query, prototypes, weights)

    # --- what the fitted model says ------------------------------------------------------------------------
    def explain(self, episode: Episode) -> dict[str, torch.Tensor]:
        """Embeddings, fitted prototypes, their class mass softmax_l(W_lj) [T, J, N], class (argmax),
        ambiguity (top mass < `ambiguity`) and origin class, and the query logits."""
        support, query = self.embed_episode(episode)
        prototypes, weights, origin = self.fitted(support, episode.support_y, episode.n_way)
        mass = weights.transpose(1, 2).softmax(-1)  # [T, J, N]
        top = mass.max(-1)
        return {
            "support": support,
            "query": query,
            "prototypes": prototypes,
            "prototype_labels": top.indices,
            "prototype_mass": mass,
            "prototype_ambiguous": top.values < self.ambiguity,
            "prototype_origin": origin,
            "weights": weights,
            "logits": self.class_logits(query, prototypes, weights),
        }

    def mapping_report(self, episodes: list[Episode]) -> dict:
        """Which prototypes map to which class, over some episodes (eval mode, no grad): counts of ambiguous
        prototypes, of prototypes whose class differs from the class they started from, of classes left without
        a prototype, the sparsity of W, and the full mapping of the first episode."""
        was_training = self.training
        self.eval()
        totals = {"prototypes": 0, "ambiguous": 0, "switched": 0, "classes": 0, "classes_without_prototype": 0}
        zero_weights, all_weights, top_mass = 0, 0, []
        first = None
        with torch.no_grad():
            for episode in episodes:
                e = self.explain(episode)
                labels, ambiguous, n = e["prototype_labels"], e["prototype_ambiguous"], episode.n_way
                covered = F.one_hot(labels.masked_fill(ambiguous, n), n + 1)[..., :n].sum(1) > 0  # [T, N]
                totals["prototypes"] += labels.numel()
                totals["ambiguous"] += int(ambiguous.sum())
                totals["switched"] += int((labels != e["prototype_origin"]).sum())
                totals["classes"] += covered.numel()
                totals["classes_without_prototype"] += int((~covered).sum())
                zero_weights += int((e["weights"] == 0).sum())
                all_weights += e["weights"].numel()
                top_mass.append(e["prototype_mass"].max(-1).values.flatten())
                if first is None:
                    first = [
                        {
                            "prototype": j,
                            "class": int(labels[0, j]),
                            "started_as": int(e["prototype_origin"][0, j]),
                            "mass": [round(float(v), 4) for v in e["prototype_mass"][0, j]],
                            "ambiguous": bool(ambiguous[0, j]),
                        }
                        for j in range(labels.shape[1])
                    ]
        self.train(was_training)
        return {
            "episodes": sum(e.tasks for e in episodes),
            **totals,
            "ambiguous_fraction": totals["ambiguous"] / max(totals["prototypes"], 1),
            "mean_top_mass": float(torch.cat(top_mass).mean()) if top_mass else float("nan"),
            "zero_weight_fraction": zero_weights / max(all_weights, 1),
            "ambiguity_threshold": self.ambiguity,
            "scale": float(self.log_scale.detach().exp()),
            "first_episode": first,
        }
