"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

For each task of a meta-batch, start from the meta-parameters theta and take k SGD steps on the
task's data, giving phi_i = U^k(theta). Then move theta towards the adapted weights,

    theta <- theta + epsilon * (1/T * sum_i phi_i - theta),

with no gradient through the inner loop (the batched version of the paper's Algorithm 2). As in the
paper, the inner loop trains on all the images the task has: here support and query together (the
paper samples a task's training images and has no held-out query set during meta-training).

In the training loop this is the `meta_update` hook: the loop's optimizer is not stepped; epsilon
follows the `scheduler` group's learning-rate schedule, epsilon_t = `outer_stepsize` * lr_t / lr_0, the factor
the loop passes as `lr_scale`. The reported training loss/accuracy are those of the query images at the last inner
step (phi_{k-1}), which the inner loop also trains on, so they read high.

Evaluation (and `forward`, also in training mode): fine-tune a copy of theta on the support set
with `test_inner_steps` (eval) or `inner_steps` (train) SGD steps, classify the query set. Forward
is first-order-differentiable, so the plain `loss.backward()` loop would train it as first-order MAML.

The model is MAML's (`fewshot_exp.algorithms.maml`): encoder plus a learned linear head of
max(`n_way`, `train_n_way`) outputs, batch norm with the statistics of the batch it sees, the inner
loop on a dict of fast weights via `torch.func`, tasks looped or vmapped (`vectorize`).

Configurable: `inner_steps` (k), `test_inner_steps`, `inner_lr`, `head_inner_lr`, `outer_stepsize`
(epsilon), `vectorize`. The paper's inner optimiser is Adam (beta1 = 0); this one uses plain SGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import II
from torch import nn

from fewshot_exp.algorithms.maml import MAML, InnerLoopConfig
from fewshot_exp.data.episodes import Episode
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


@register("algorithm", "reptile")
@dataclass
class ReptileConfig(InnerLoopConfig):
    _target_: str = "fewshot_exp.algorithms.reptile.Reptile"
    inner_steps: int = 5
    test_inner_steps: int = 10
    inner_lr: float = 0.1
    outer_stepsize: float = 1.0  # epsilon in theta <- theta + epsilon (phi - theta), scaled by the lr schedule
    n_way: int = II("episode.n_way")  # the learned head has max(n_way, train_n_way) outputs
    train_n_way: int | None = II("train.episode.n_way")


class Reptile(MAML):
    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        inner_steps: int = 5,
        test_inner_steps: int = 10,
        inner_lr: float = 0.1,
        head_inner_lr: float | None = None,
        outer_stepsize: float = 1.0,
        vectorize: bool | None = None,
        n_way: int = 5,
        train_n_way: int | None = None,
        image_size: int = 28,
        embedding_dim: int | None = None,
    ):
        if inner_steps < 1:
            raise UserError(f"algorithm.inner_steps must be at least 1 for Reptile, got {inner_steps}")
        if not outer_stepsize > 0:
            raise UserError(f"algorithm.outer_stepsize must be positive, got {outer_stepsize}")
        super().__init__(
            encoder,
            distance,
            inner_steps,
            test_inner_steps,
            inner_lr,
            head_inner_lr,
            first_order=True,
            meta_sgd=False,
            vectorize=vectorize,
            n_way=n_way,
            train_n_way=train_n_way,
            image_size=image_size,
            embedding_dim=embedding_dim,
        )
        self.outer_stepsize = outer_stepsize

    def meta_update(
        self, episode: Episode, optimizer: torch.optim.Optimizer, lr_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """theta <- theta + epsilon * (mean_i phi_i - theta), epsilon = `outer_stepsize` times the learning-rate
        schedule's factor `lr_scale`; returns (loss, query logits [T, N*Q, N]) to log."""
        epsilon = self.outer_stepsize * lr_scale
        n_way, n_support = episode.n_way, episode.support_x.shape[1]
        x = torch.cat([episode.support_x, episode.query_x], 1)  # [T, N*(K+Q), C, H, W]
        y = torch.cat([episode.support_y, episode.query_y], 1)  # [T, N*(K+Q)]
        lrs = self.learning_rates(n_way)

        with torch.no_grad():
            meta = self.meta_weights()

            def task(x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor]:
                weights = self.adapt(meta, lrs, x, y, n_way, self.inner_steps - 1, second_order=False)
                weights, logits = self.inner_step(weights, lrs, x, y, second_order=False)
                return weights, logits[n_support:]

            adapted, logits = self.for_each_task(task, x, y)  # each fast weight [T, ...]; logits [T, N*Q, N]
            for group_name, params in meta.items():
                for name, theta in params.items():
                    phi = adapted[group_name][name].mean(0)
                    target = theta[:n_way] if group_name == "head" else theta  # the head rows this episode used
                    target.add_(phi - target, alpha=epsilon)
        # The loop's optimizer has nothing to apply (no gradients were computed, so this step changes nothing), but
        # stepping it keeps the lr scheduler's order check satisfied.
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()
        return self.loss(logits, episode), logits
