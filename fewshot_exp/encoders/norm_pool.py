"""Training-mode batch norm, 2x2 max-pool and ReLU of a Conv-4 block as one autograd function (CPU).

With batch statistics (mu, sigma^2) over the M = N*H*W values of each channel, BN is a per-channel affine map
y = a x + b with a = gamma / sqrt(sigma^2 + eps) and b = beta - a mu. For a > 0 it is monotone, so it commutes with
the max-pool:

    relu(maxpool(a x + b)) = relu(a maxpool(x) + b).

Forward: the statistics (one pass over x), the max-pool of x (one pass) and the affine map and ReLU on the pooled
map (a quarter of the values), instead of the statistics, the normalised map (read x, write y) and its max-pool.
Backward: with dy the pooled gradient g (after the ReLU's mask) scattered to the argmax positions and
x_hat = (x - mu) / sigma, BN's gradient (Ioffe & Szegedy 2015)

    d_beta = sum dy,   d_gamma = sum dy x_hat,   dx = a dy - a d_beta / M - a d_gamma x_hat / M

needs only the pooled values for the sums (dy is zero elsewhere) and is c0 + c1 x plus a dy at the argmax positions:
one pass over x and a scatter, instead of the max-pool's zero-filled full-size gradient and BN's two passes
over it. Both are the same functions as nn.BatchNorm2d + nn.MaxPool2d + ReLU; the numbers differ by float
rounding (the affine map is applied after the max instead of before it), which tests/test_norm_pool.py bounds.

Used by Conv-4 for a training-mode nn.BatchNorm2d with affine weights that are all > 0 (checked each call;
otherwise, and on CUDA, the unfused modules run). Its backward is once-differentiable: second-order methods
(MAML) swap the encoder's BN for TaskBatchNorm and never reach it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from fewshot_exp.encoders.task_batch_norm import per_channel


def scatter_add_at(dx: torch.Tensor, indices: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """dx[n, c].flatten()[indices[n, c, i, j]] += src[n, c, i, j], in dx's own memory format (NCHW or NHWC)."""
    n, c, h, w = dx.shape
    if not dx.is_contiguous(memory_format=torch.channels_last):
        dx = dx.contiguous()
    if dx.is_contiguous():
        dx.view(n, c, h * w).scatter_add_(2, indices.reshape(n, c, -1), src.reshape(n, c, -1))
    else:  # channels_last: the flat spatial index is dim 1 of the [N, H*W, C] view
        nhwc = dx.permute(0, 2, 3, 1).view(n, h * w, c)
        nhwc.scatter_add_(1, indices.permute(0, 2, 3, 1).reshape(n, -1, c), src.permute(0, 2, 3, 1).reshape(n, -1, c))
    return dx


class BatchNormMaxPoolReLU(torch.autograd.Function):
    """relu(maxpool(batch_norm(x))) with the batch's mean and biased variance given (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps: float, pool: tuple):
        invstd = torch.rsqrt(var + eps)
        a = weight * invstd
        pooled, indices = F.max_pool2d_with_indices(x, *pool)
        out = torch.addcmul(per_channel(bias - mean * a, x), pooled, per_channel(a, x)).relu_()
        ctx.save_for_backward(x, pooled, indices, out, weight, mean, invstd)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, pooled, indices, out, weight, mean, invstd = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad_out, out, 0)  # the ReLU's gradient, [N, C, H/2, W/2]
        dims = (0, 2, 3)
        d_beta = g.sum(dims)
        d_gamma = invstd * ((g * pooled).sum(dims) - mean * d_beta)  # sum g x_hat at the argmax positions
        a = weight * invstd
        m = x.numel() // x.shape[1]
        c1 = -a * d_gamma * invstd / m
        c0 = -a * d_beta / m - c1 * mean
        dx = scatter_add_at(torch.addcmul(per_channel(c0, x), x, per_channel(c1, x)), indices, g * per_channel(a, x))
        return dx, d_gamma, d_beta, None, None, None, None


def fusable(norm: nn.Module, pool: nn.Module, x: torch.Tensor) -> bool:
    """Whether `batch_norm_max_pool_relu` computes relu(pool(norm(x))) here: a training-mode affine BatchNorm2d with
    all weights > 0, a plain MaxPool2d, a 4-d CPU float tensor."""
    return (
        isinstance(norm, nn.BatchNorm2d)
        and norm.training
        and norm.affine
        and isinstance(pool, nn.MaxPool2d)
        and not pool.return_indices
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and bool((norm.weight > 0).all())
    )


def batch_norm_max_pool_relu(norm: nn.BatchNorm2d, pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """relu(pool(norm(x))) for a training-mode BatchNorm2d, its running statistics updated as norm(x) would."""
    momentum = update_counter(norm)
    tracking = norm.track_running_stats and norm.running_mean is not None
    mean, var = torch.batch_norm_update_stats(
        x.detach(), norm.running_mean if tracking else None, norm.running_var if tracking else None, momentum
    )
    pool_args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    return BatchNormMaxPoolReLU.apply(x, norm.weight, norm.bias, mean, var, norm.eps, pool_args)


def update_counter(norm: nn.BatchNorm2d) -> float:
    """Count the batch as nn.BatchNorm2d.forward does; the running statistics' update factor (momentum, or the
    cumulative average's 1 / batches when momentum is None)."""
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            return 1.0 / float(norm.num_batches_tracked)
    return 0.0 if norm.momentum is None else norm.momentum
