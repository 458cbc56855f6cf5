"""MAML (Finn, Abbeel & Levine, ICML 2017), first-order MAML, Meta-SGD (Li et al. 2017) and
ProtoMAML (Triantafillou et al., ICLR 2020), as flags on one implementation.

The model is the encoder f followed by a linear head (W, b). For each task, the meta-parameters
theta = (encoder, W, b) are adapted by `inner_steps` SGD steps on the support loss,

    theta_0 = theta,    theta_{j+1} = theta_j - alpha * grad_theta L_support(theta_j),

and the task's query images are classified by the adapted weights theta_k. The meta-objective is
the query loss of theta_k averaged over the tasks of a meta-batch, minimised by the training loop's
Adam. Its gradient runs back through the inner loop (second order: d theta_k / d theta contains the
Hessians of the support loss).

- `first_order: true` (`algorithm=fomaml`): the inner gradients are treated as constants, so
  d theta_k / d theta = I and the meta-gradient is the query-loss gradient at theta_k.
- `algorithm=protomaml`: the head is not learned; each task starts it from the prototypes
  c_n = mean of f(x) over the support images of class n, computed with the un-adapted encoder:

      W_n = 2 c_n,    b_n = -||c_n||^2,

  so that W f(x) + b = -||f(x) - c_n||^2 + ||f(x)||^2: with 0 inner steps, ProtoMAML makes
  ProtoNet's (squared Euclidean) predictions. The meta-gradient also flows through (W, b) into the
  encoder via the prototypes, in the second- and in the first-order variant (fo-Proto-MAML).
- `meta_sgd: true`: alpha is a learned tensor of the same shape as each parameter (ProtoMAML's head
  has one learning rate per feature, shared by all classes, so relabelling classes stays harmless),
  initialised at `inner_lr` / `head_inner_lr` and meta-learned with the rest.

Configurable: `inner_steps` (training) and `test_inner_steps` (evaluation: `self.training` picks),
`inner_lr` (encoder) and `head_inner_lr` (head; null = inner_lr), `first_order`, `meta_sgd`,
`vectorize`. MAML's head has max(`n_way`, `train_n_way`) outputs (the YAML reads them from
`episode.n_way` and `train.episode.n_way`); an episode with fewer classes uses the first rows. Its
input size is measured by running the encoder once on `image_size` pixels, or set `embedding_dim`.
The head's meta-initialisation starts at zero (the paper draws it at random): all classes start
equal, so early meta-gradients do not depend on which random row a label lands on. From a random head,
the first-order meta-gradient can be nearly orthogonal to the second-order one, and a few Adam steps can
raise first-order MAML's loss on a fixed episode instead of lowering it (the "it can learn" check of
tests/test_algorithm_contract.py); from a zero head they lower it. Cf. the "zeroing trick" of Kao et al.
(ICLR 2022).
The `distance` group is not used.

Implementation:
- The inner loop is functional: fast weights are a dict of tensors fed to the encoder with
  `torch.func.functional_call`; modules are never copied. Inner gradients come from
  `torch.func.grad`, which computes partial derivatives of the support loss w.r.t. the fast weights
  (so ProtoMAML's step does not differentiate through the head init) while staying differentiable
  w.r.t. theta for the meta-gradient. Being a function transform, it also works under the
  `torch.no_grad()` of the evaluation protocol, which then builds no graph across the test steps.
- Batch norm uses the statistics of the batch it sees, at training and at test time, as in the
  MAML paper: the support pass normalises with the task's support statistics and the query pass
  with the task's query statistics (transductive within a task, never across tasks). The encoder's
  BatchNorm layers are replaced at construction by `TaskBatchNorm` (`track_running_stats=False`
  semantics, same affine parameters): they keep no running buffers, so `eval()` changes nothing,
  and no task can leak into another task or into the module's state. A channels_last map is normalised as
  the [N*H*W, C] rows of its NHWC memory (`batch_norm_rows`), whose double backward is fast on CPU, so
  second-order MAML keeps the encoder's channels_last convolutions and max-pool.
- Tasks of a meta-batch run one at a time (`vectorize: false`) or together with `torch.func.vmap`
  (`vectorize: true`); both give the same numbers. Under vmap, batch norm runs as composite ops,
  because the fused kernel's double backward is wrong there (see TaskBatchNorm). `vectorize: null`
  picks the loop on CPU, the faster path there: it keeps the fused batch norm and the channels_last
  layout that vmap gives up. On CUDA it picks vmap, which runs all tasks of a meta-batch in one
  batched kernel per op. `python benchmarks/maml_vmap.py` times both paths on the device at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import II, MISSING
from torch import nn
from torch.func import functional_call, grad, vmap

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm
from fewshot_exp.data.episodes import Episode
from fewshot_exp.encoders import task_batch_norm
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register
from fewshot_exp.precision import float32

Weights = dict[str, dict[str, torch.Tensor]]  # {"encoder": {name: tensor}, "head": {"weight": .., "bias": ..}}


class TaskBatchNorm(nn.Module):
    """Batch norm that always normalises with the statistics of the batch it is given; no running buffers.

    Replaces a `BatchNorm*d` and keeps its affine parameters (same names, so `weight` and `bias` load from
    the same state-dict keys). With `composite = True` it is computed from mean/var ops instead of the fused
    kernel: under vmap, the fused kernel's double backward gives wrong gradients (pytorch/functorch#534;
    tests/test_maml.py checks the vmap path against the loop), while the composite ops are exact. Otherwise
    (`fast`, the default) a channels_last map is normalised as its [N*H*W, C] rows and the affine case uses
    `fewshot_exp.encoders.task_batch_norm` (fused kernels, a short double backward); `fast=False` is plain F.batch_norm
    (benchmarks/fusion.py's reference).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, fast: bool = True):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps
        self.composite = False
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.composite:
            if not self.fast:
                return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
            if channels_last_4d(x):
                return batch_norm_rows(x, self.weight, self.bias, self.eps)
            return plain_batch_norm(x, self.weight, self.bias, self.eps)
        return composite_batch_norm(x, self.weight, self.bias, self.eps)


@float32  # under bf16 autocast the mean and variance of a bf16 map taken in bf16 are off (tests/test_precision.py)
def composite_batch_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Batch norm from mean/var ops, which `torch.func.vmap` batches (the vectorised inner loop)."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = (x - x.mean(dims, keepdim=True)) * torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.view(shape)
    return y if bias is None else y + bias.view(shape)


def channels_last_4d(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def batch_norm_rows(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Batch norm of a channels_last map [N, C, H, W] as batch norm of its [N*H*W, C] rows, a free view of NHWC memory;
    the output is channels_last again. Same function; on CPU its double backward is several times faster than the
    4-d channels_last call's (and as fast as NCHW's), because the 4-d channels_last backward kernels and the
    reductions of the double backward are slow in that layout (benchmarks/fusion.py times the MAML meta-step)."""
    n, c, h, w = x.shape
    rows = plain_batch_norm(x.permute(0, 2, 3, 1).reshape(n * h * w, c), weight, bias, eps)
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def plain_batch_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Batch norm with batch statistics: with affine parameters of x's dtype, `fewshot_exp.encoders.task_batch_norm`
    (the fused kernels and a short double backward), else (no affine map, or mixed precision under autocast)
    F.batch_norm."""
    if weight is not None and bias is not None and weight.dtype == x.dtype == bias.dtype:
        return task_batch_norm.batch_norm(x, weight, bias, eps)
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


def use_task_batch_norm(module: nn.Module) -> None:
    """Swap every BatchNorm*d inside `module` for a TaskBatchNorm, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, TaskBatchNorm(child))
        else:
            use_task_batch_norm(child)


def measure_embedding_dim(encoder: nn.Module, image_size: int) -> int:
    """The encoder's output size for `image_size` px inputs, by running it once on a dummy batch."""
    in_channels = next((m.in_channels for m in encoder.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if in_channels is None:
        raise UserError(f"cannot infer the embedding size of {type(encoder).__name__}; set algorithm.embedding_dim")
    p = next(encoder.parameters())
    dummy = torch.zeros(2, in_channels, image_size, image_size, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        return int(encoder(dummy).shape[-1])


def check_embedding_dim(encoder: nn.Module, image_size: int, embedding_dim: int | None) -> None:
    """A set `algorithm.embedding_dim` must be what the encoder gives at the data's image size (if measurable)."""
    if embedding_dim is None:
        return
    try:
        measured = measure_embedding_dim(encoder, image_size)
    except UserError:  # an encoder without convolutions: the setting is all there is
        return
    if embedding_dim != measured:
        raise UserError(
            f"algorithm.embedding_dim={embedding_dim} but the encoder gives {measured}-d embeddings of "
            f"{image_size} px images; leave algorithm.embedding_dim=null to use the measured size"
        )


def detached(weights: Weights) -> Weights:
    return {group: {k: w.detach() for k, w in ws.items()} for group, ws in weights.items()}


def sgd_step(weights: Weights, grads: Weights, lrs: Weights) -> Weights:
    """theta - alpha * g for every tensor; alpha is a float or a tensor broadcastable to theta."""
    return {group: {k: w - lrs[group][k] * grads[group][k] for k, w in ws.items()} for group, ws in weights.items()}


def one_hot(labels: torch.Tensor, n_way: int, dtype: torch.dtype) -> torch.Tensor:
    # F.one_hot checks the label values, which vmap cannot do; a comparison can be batched.
    return (labels.unsqueeze(-1) == torch.arange(n_way, device=labels.device)).to(dtype)


@float32
def linear_head(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits z W^T + b, in float32 under autocast (ProtoMAML's 2c.z - ||c||^2 cancels)."""
    return F.linear(z, weight, bias)


@float32
def prototype_head(z: torch.Tensor, support_y: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
    """ProtoMAML's head init from support embeddings z [S, D]: W = 2c, b = -||c||^2 (c: class means)."""
    one_hot_y = one_hot(support_y, n_way, z.dtype)  # [S, N]
    prototypes = (one_hot_y.T @ z) / one_hot_y.sum(0).clamp_min(1).unsqueeze(1)  # [N, D]
    return {"weight": 2 * prototypes, "bias": -prototypes.pow(2).sum(1)}


def stack(outputs: list[Any]) -> Any:
    """Stack a list of equally structured outputs (tensors, tuples, dicts of them) along a new dim 0."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(outputs)
    if isinstance(first, dict):
        return {k: stack([o[k] for o in outputs]) for k in first}
    return type(first)(stack(list(parts)) for parts in zip(*outputs))


@dataclass
class InnerLoopConfig(AlgorithmConfig):
    """Settings shared by the gradient-based meta-learners (this module and reptile.py)."""

    inner_steps: int = 1  # SGD steps on each task's support set when training
    test_inner_steps: int = MISSING  # ... when evaluating
    inner_lr: float = MISSING  # inner SGD step size of the encoder
    head_inner_lr: float | None = None  # of the linear head; None = inner_lr
    vectorize: bool | None = None  # torch.func.vmap over the tasks of a batch; None = on CUDA, a loop on CPU
    image_size: int = II("dataset.image_size")  # to measure the encoder's output size
    embedding_dim: int | None = None  # the encoder's output size; None = measured


# ProtoMAML (Triantafillou et al. 2020). Defaults follow the UvA tutorial (1 inner step of 0.1 for encoder and head);
# it tests with 200 steps (algorithm.test_inner_steps=200), 10 here to keep CPU evaluation quick.
@register("algorithm", "protomaml")
@dataclass
class ProtoMAMLConfig(InnerLoopConfig):
    _target_: str = "fewshot_exp.algorithms.maml.ProtoMAML"
    test_inner_steps: int = 10
    inner_lr: float = 0.1
    first_order: bool = False  # treat the inner gradients as constants (first-order MAML; fo-Proto-MAML)
    meta_sgd: bool = False  # learn a per-parameter inner step size (Meta-SGD)


# MAML (Finn et al. 2017), second order: the paper's Omniglot 5-way inner loop (1 step of 0.4), but also 1 step at
# test (on glyphs, 3 steps at 0.4 overshoot: docs/algorithms/gradient-based.md). The paper's full settings, 32 tasks
# per meta-batch included, are experiment=maml_omniglot_5way / maml_omniglot_20way.
@register("algorithm", "maml")
@dataclass
class MAMLConfig(ProtoMAMLConfig):
    _target_: str = "fewshot_exp.algorithms.maml.MAML"
    test_inner_steps: int = 1  # = inner_steps; the paper tests with 3 (experiment=maml_omniglot_5way)
    inner_lr: float = 0.4
    n_way: int = II("episode.n_way")  # the learned head has max(n_way, train_n_way) outputs
    train_n_way: int | None = II("train.episode.n_way")


class MAML(FewShotAlgorithm):
    #: MAML's head init is learned per output row, so class labels are not interchangeable.
    label_equivariant = False
    #: Initialise the head from the support prototypes (ProtoMAML) instead of a learned init.
    prototype_head = False

    @classmethod
    def uses_distance(cls, options: Any) -> bool:
        return False  # the `distance` group is not used

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        inner_steps: int = 1,
        test_inner_steps: int = 1,
        inner_lr: float = 0.4,
        head_inner_lr: float | None = None,
        first_order: bool = False,
        meta_sgd: bool = False,
        vectorize: bool | None = None,
        n_way: int = 5,
        train_n_way: int | None = None,
        image_size: int = 28,
        embedding_dim: int | None = None,
    ):
        super().__init__(encoder, distance)
        for name, value in (("inner_steps", inner_steps), ("test_inner_steps", test_inner_steps)):
            if value < 0:
                raise UserError(f"algorithm.{name} must be >= 0, got {value}")
        head_inner_lr = inner_lr if head_inner_lr is None else head_inner_lr
        for name, value in (("inner_lr", inner_lr), ("head_inner_lr", head_inner_lr)):
            if not value >= 0:
                raise UserError(f"algorithm.{name} must be >= 0, got {value}")
        self.inner_steps, self.test_inner_steps = inner_steps, test_inner_steps
        self.inner_lr, self.head_inner_lr = inner_lr, head_inner_lr
        self.first_order, self.meta_sgd, self.vectorize = first_order, meta_sgd, vectorize
        use_task_batch_norm(self.encoder)  # batch statistics always; no running buffers to leak into

        needs_dim = not self.prototype_head or meta_sgd
        if embedding_dim is not None and embedding_dim < 1:
            raise UserError(f"algorithm.embedding_dim must be positive or null (= measured), got {embedding_dim}")
        dim = (embedding_dim or measure_embedding_dim(self.encoder, image_size)) if needs_dim else None
        if not self.prototype_head:
            self.head = nn.Linear(dim, max(n_way, train_n_way or 0))
            nn.init.zeros_(self.head.weight)  # every class starts equal (see the module docstring)
            nn.init.zeros_(self.head.bias)
        if meta_sgd:  # learned per-parameter inner learning rates, stored under "encoder__<name>" / "head__<name>"
            lrs = {
                f"encoder__{k.replace('.', '__')}": torch.full_like(p, inner_lr)
                for k, p in self.encoder.named_parameters()
            }
            head_shapes = (
                {"weight": (1, dim), "bias": (1,)}
                if self.prototype_head
                else {k: p.shape for k, p in self.head.named_parameters()}
            )
            lrs.update({f"head__{k}": torch.full(s, head_inner_lr) for k, s in head_shapes.items()})
            self.inner_lrs = nn.ParameterDict({k: nn.Parameter(v.contiguous()) for k, v in lrs.items()})

    # --- the pieces of one task ------------------------------------------------------------------

    def meta_weights(self) -> Weights:
        weights: Weights = {"encoder": dict(self.encoder.named_parameters())}
        if not self.prototype_head:
            weights["head"] = dict(self.head.named_parameters())
        return weights

    def learning_rates(self, n_way: int) -> Weights:
        """alpha for every fast weight: floats, or Meta-SGD's learned tensors (head rows cut to n_way)."""
        if not self.meta_sgd:
            return {
                "encoder": {k: self.inner_lr for k, _ in self.encoder.named_parameters()},
                "head": {"weight": self.head_inner_lr, "bias": self.head_inner_lr},
            }
        lrs = {
            "encoder": {
                k: self.inner_lrs[f"encoder__{k.replace('.', '__')}"] for k, _ in self.encoder.named_parameters()
            }
        }
        head = {k: self.inner_lrs[f"head__{k}"] for k in ("weight", "bias")}
        lrs["head"] = head if self.prototype_head else {k: v[:n_way] for k, v in head.items()}
        return lrs

    def logits_with(self, weights: Weights, x: torch.Tensor) -> torch.Tensor:
        """Images [M, C, H, W] -> logits [M, N] with the given (fast) weights."""
        z = functional_call(self.encoder, weights["encoder"], (x,))
        if z.shape[-1] != weights["head"]["weight"].shape[-1]:
            raise UserError(
                f"the encoder gives {z.shape[-1]}-d embeddings of {x.shape[-1]} px images but the head "
                f"takes {weights['head']['weight'].shape[-1]}-d ones; set algorithm.image_size or "
                "algorithm.embedding_dim"
            )
        return linear_head(z, weights["head"]["weight"], weights["head"]["bias"])

    def support_loss(self, weights: Weights, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits_with(weights, x)
        return F.cross_entropy(logits, y), logits

    def init_head(
        self, encoder_weights: dict[str, torch.Tensor], support_x: torch.Tensor, support_y: torch.Tensor, n_way: int
    ) -> dict[str, torch.Tensor]:
        """The head a task starts from: MAML's learned init, or ProtoMAML's W = 2c, b = -||c||^2."""
        if not self.prototype_head:
            if n_way > self.head.out_features:
                raise UserError(
                    f"the MAML head has {self.head.out_features} outputs but the episode is {n_way}-way; "
                    f"set algorithm.n_way={n_way}"
                )
            return {"weight": self.head.weight[:n_way], "bias": self.head.bias[:n_way]}
        z = functional_call(self.encoder, encoder_weights, (support_x,))  # [S, D], un-adapted encoder
        return prototype_head(z, support_y, n_way)

    def inner_step(
        self, weights: Weights, lrs: Weights, x: torch.Tensor, y: torch.Tensor, second_order: bool
    ) -> tuple[Weights, torch.Tensor]:
        """One SGD step on the loss of (x, y); also returns the logits of x before the step."""
        at = weights if second_order else detached(weights)
        grads, logits = grad(self.support_loss, has_aux=True)(at, x, y)
        return sgd_step(weights, grads, lrs), logits

    def adapt(
        self, meta: Weights, lrs: Weights, x: torch.Tensor, y: torch.Tensor, n_way: int, steps: int, second_order: bool
    ) -> Weights:
        """Fast weights after `steps` SGD steps on (x, y), starting from the meta-weights."""
        weights = {"encoder": meta["encoder"], "head": self.init_head(meta["encoder"], x, y, n_way)}
        for _ in range(steps):
            weights, _ = self.inner_step(weights, lrs, x, y, second_order)
        return weights

    def for_each_task(self, fn: Callable[..., Any], *per_task: torch.Tensor) -> Any:
        """fn applied to each task's slice of the [T, ...] tensors, outputs stacked over tasks."""
        if self.vectorized():
            with self.vmappable_encoder():
                # each task draws its own dropout / DropBlock masks, as in the loop
                return vmap(fn, randomness="different")(*per_task)
        return stack([fn(*task) for task in zip(*per_task)])

    @contextmanager
    def vmappable_encoder(self) -> Iterator[None]:
        """Composite batch norm (exact double backward under vmap) and, as vmap cannot query channels_last
        contiguity, the encoder's default memory layout."""
        norms = [m for m in self.encoder.modules() if isinstance(m, TaskBatchNorm)]
        channels_last = getattr(self.encoder, "channels_last", False)
        for m in norms:
            m.composite = True
        if channels_last:
            self.encoder.channels_last = False
        try:
            yield
        finally:
            for m in norms:
                m.composite = False
            if channels_last:
                self.encoder.channels_last = True

    # --- episode in, logits out ------------------------------------------------------------------

    def forward(self, episode: Episode) -> torch.Tensor:  # [T, N*Q, N]
        steps = self.inner_steps if self.training else self.test_inner_steps
        # Without autograd recording (evaluation), only the inner gradients are needed.
        second_order = not self.first_order and torch.is_grad_enabled()
        meta, lrs, n_way = self.meta_weights(), self.learning_rates(episode.n_way), episode.n_way

        def task(support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
            weights = self.adapt(meta, lrs, support_x, support_y, n_way, steps, second_order)
            return self.logits_with(weights, query_x)

        return self.for_each_task(task, episode.support_x, episode.support_y, episode.query_x)

    def vectorized(self) -> bool:
        """Whether the tasks of a batch run under vmap: `vectorize`, or None = on CUDA."""
        device = next(self.parameters()).device
        return self.vectorize if self.vectorize is not None else device.type == "cuda"

    def meta_update(
        self, episode: Episode, optimizer: torch.optim.Optimizer, lr_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The meta-gradient of the mean query loss, grad (1/T) sum_t L_t(theta_k^t), accumulated with one backward
        per task, then one optimizer step. Only one task's graph through its inner loop is alive at a time, so peak
        memory is one task's instead of T's; the gradient is the loop's single backward's up to float summation
        order (every task has N*Q queries, so the mean over all queries is the mean of the task means). Under vmap
        (`vectorize`, on CUDA by default) all tasks share one graph anyway: None, the loop's own step."""
        if self.vectorized() or episode.tasks == 1:
            return None
        optimizer.zero_grad(set_to_none=True)
        losses, logits = [], []
        for t in range(episode.tasks):
            task = episode.task(t)
            task_logits = self(task)
            loss = self.loss(task_logits, task)
            (loss / episode.tasks).backward()
            losses.append(loss.detach())
            logits.append(task_logits.detach())
        optimizer.step()
        return torch.stack(losses).mean(), torch.cat(logits)


class ProtoMAML(MAML):
    """MAML whose head starts each task at the prototypes of its support set (see the module docstring)."""

    label_equivariant = True
    prototype_head = True

    def __init__(
        self,
        encoder: nn.Module,
        distance: nn.Module,
        inner_steps: int = 1,
        test_inner_steps: int = 10,
        inner_lr: float = 0.1,
        head_inner_lr: float | None = None,
        first_order: bool = False,
        meta_sgd: bool = False,
        vectorize: bool | None = None,
        image_size: int = 28,
        embedding_dim: int | None = None,
    ):
        super().__init__(
            encoder,
            distance,
            inner_steps,
            test_inner_steps,
            inner_lr,
            head_inner_lr,
            first_order,
            meta_sgd,
            vectorize,
            image_size=image_size,
            embedding_dim=embedding_dim,
        )
