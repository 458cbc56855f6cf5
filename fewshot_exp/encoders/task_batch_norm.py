"""Training-mode batch norm with a short double backward, for second-order MAML.

Forward and backward are PyTorch's fused kernels. With x_hat = (x - mu) r, r = 1 / sqrt(var + eps), per channel
over its M values, the backward maps the output gradient u to

    g_x = gamma r (u - mean(u) - x_hat mean(u x_hat)),    g_gamma = sum u x_hat,    g_beta = sum u,

and second-order MAML differentiates that map again. PyTorch's double backward of the fused kernel
(`batchnorm_double_backward`) spends about 40 passes over the activations on it. Written out, with
v, a, b the gradients arriving at g_x, g_gamma, g_beta, A = mean(u), B = mean(u x_hat), C = mean(v x_hat),
V = mean(v) and W = mean(v u) (all per channel; A and B are g_beta / M and g_gamma / M from the backward):

    d u     = gamma r v + (a - gamma r C) x_hat + (b - gamma r V)
    d gamma = r M (W - V A - C B)
    d x     = p v + q u + s x_hat + t,    with h = -gamma r B v + (a - gamma r C) u,
              p = -gamma r^2 B,   q = r (a - gamma r C),   t = -r mean(h),
              s = -r mean(h x_hat) - gamma r d_gamma / M,   mean(h x_hat) = B (a - 2 gamma r C),

(x_hat and r depend on x: dx_hat_i/dx_j = r (delta_ij - 1/M - x_hat_i x_hat_j / M), dr/dx_j = -r^2 x_hat_j / M),
about 11 passes: x_hat, three products summed, and the two linear combinations. tests/test_task_batch_norm.py
checks it by gradgradcheck and against PyTorch's own double backward; tests/test_maml.py's finite-difference
meta-gradient tests run through it.

PyTorch's CPU kernels are precise on NCHW maps, but on [M, C] rows (the layout `batch_norm_rows` gives a
channels_last map) they sum each channel's M values one after the other: in float32 their statistics and
gradient sums are 10-20 times less precise, and the error of second-order MAML's 5-step meta-gradient, which
goes through them at every inner step, is about 10 times NCHW's in the median over seeds (hundreds of times on
some). On rows, the statistics and the backward's sums are therefore cascade sums (`torch.sum`), the variance
from a centred second pass, and only the normalisation is the fused kernel's (tests/test_layout_precision.py).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [C] vector shaped to broadcast against x [M, C] or [N, C, ...]."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def channel_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def precise_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and biased variance, by cascade sums and a centred second pass."""
    dims, m = channel_dims(x), x.numel() // x.shape[1]
    mean = x.sum(dims) / m
    centred = x - per_channel(mean, x)
    return mean, (centred * centred).sum(dims) / m


def precise_backward(
    u: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor, r: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_x, g_gamma, g_beta) of the module docstring, with cascade sums."""
    dims, m = channel_dims(x), x.numel() // x.shape[1]
    x_hat = torch.addcmul(per_channel(-mean * r, x), x, per_channel(r, x))
    g_beta, g_gamma = u.sum(dims), (u * x_hat).sum(dims)
    gr = gamma * r
    g_x = torch.addcmul(per_channel(-gr * g_beta / m, x), x_hat, per_channel(-gr * g_gamma / m, x))
    return g_x.addcmul_(u, per_channel(gr, x)), g_gamma, g_beta


def summed_in_sequence(x: torch.Tensor) -> bool:
    """Whether PyTorch's CPU batch-norm kernels sum x's channels in sequence (imprecise): rows [M, C] on the CPU."""
    return x.dim() == 2 and x.device.type == "cpu"


class BatchNorm(torch.autograd.Function):
    """y = batch_norm(x, weight, bias) with batch statistics; its backward is `BatchNormBackward`."""

    @staticmethod
    def forward(x, weight, bias, eps):
        if not summed_in_sequence(x):
            return torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        mean, var = precise_statistics(x)  # the fused kernel normalises with given statistics in its inference mode
        return torch.native_batch_norm(x, weight, bias, mean, var, False, 0.0, eps)[0], mean, torch.rsqrt(var + eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, eps = inputs
        _, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_invstd):
        x, weight, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = BatchNormBackward.apply(grad_y, x, weight, mean, invstd, ctx.eps)
        return grad_x, grad_weight, grad_bias, None


class BatchNormBackward(torch.autograd.Function):
    """(g_x, g_gamma, g_beta) of batch norm from the output gradient u, by the fused kernel; differentiable once more
    by the formulas of the module docstring."""

    @staticmethod
    def forward(grad_y, x, weight, mean, invstd, eps):
        if summed_in_sequence(x):
            return precise_backward(grad_y, x, weight, mean, invstd)
        return torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, None, None, mean, invstd, True, eps, [True, True, True]
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_y, x, weight, mean, invstd, _ = inputs
        _, grad_weight, grad_bias = output
        ctx.save_for_backward(grad_y, x, weight, mean, invstd, grad_weight, grad_bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, v, a, b):
        u, x, gamma, mean, r, g_gamma, g_beta = ctx.saved_tensors
        dims, m = channel_dims(x), x.numel() // x.shape[1]
        zeros = torch.zeros_like(mean)
        a = zeros if a is None else a
        b = zeros if b is None else b
        big_a, big_b = g_beta / m, g_gamma / m
        x_hat = torch.addcmul(per_channel(-mean * r, x), x, per_channel(r, x))
        if v is None:
            v_mean = c = vu_mean = zeros
        else:
            v_mean, c, vu_mean = v.mean(dims), (v * x_hat).mean(dims), (v * u).mean(dims)
        gr = gamma * r
        k = a - gr * c  # coefficient of x_hat in d u, of u in h
        d_u = torch.addcmul(per_channel(b - gr * v_mean, x), x_hat, per_channel(k, x))
        if v is not None:
            d_u.addcmul_(v, per_channel(gr, x))
        d_gamma = r * m * (vu_mean - v_mean * big_a - c * big_b)
        h_mean = -gr * big_b * v_mean + k * big_a
        hx_mean = big_b * (a - 2 * gr * c)
        s = -r * hx_mean - gr * d_gamma / m
        d_x = torch.addcmul(per_channel(-r * h_mean, x), x_hat, per_channel(s, x))
        d_x.addcmul_(u, per_channel(r * k, x))
        if v is not None:
            d_x.addcmul_(v, per_channel(-gr * r * big_b, x))
        return d_u, d_x, d_gamma, None, None, None


def batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Training-mode batch norm of x [N, C, ...] (or rows [M, C]) with batch statistics; see the module docstring."""
    return BatchNorm.apply(x, weight, bias, eps)[0]
