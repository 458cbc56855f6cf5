"""The fused training-mode BN + max-pool + ReLU (fewshot_exp/encoders/norm_pool.py) is nn.BatchNorm2d +
nn.MaxPool2d + ReLU: its gradient against finite differences, its outputs, gradients and running statistics against
the modules, and it steps aside where the identity it rests on does not hold. float64 in NCHW and channels_last (the
fused backward scatters in each), unless a test says otherwise."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.encoders.norm_pool import BatchNormMaxPoolReLU, batch_norm_max_pool_relu, fusable


def modules(channels: int = 4, dtype: torch.dtype = torch.float64, **bn) -> tuple[nn.BatchNorm2d, nn.MaxPool2d]:
    norm = nn.BatchNorm2d(channels, **bn).to(dtype)
    with torch.no_grad():  # affine parameters away from their identity init, all weights > 0
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    return norm, nn.MaxPool2d(2)


def unfused(norm: nn.Module, pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(pool(norm(x)))


@pytest.mark.parametrize("size", [6, 7])  # even, and odd (the last row and column belong to no window)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_matches_finite_differences(size, channels_last):
    """gradcheck perturbs x, w and b; f recomputes the batch statistics of each perturbed x (passing them in detached),
    so the finite differences see their dependence on x, which the analytic backward must supply by its formula."""
    torch.manual_seed(0)
    norm, _ = modules(3)
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def f(x, weight, bias):
        mean, var = x.detach().mean((0, 2, 3)), x.detach().var((0, 2, 3), unbiased=False)
        return BatchNormMaxPoolReLU.apply(x, weight, bias, mean, var, 1e-5, (2, 2, 0, 1, False))

    weight, bias = (p.detach().clone().requires_grad_() for p in (norm.weight, norm.bias))
    assert torch.autograd.gradcheck(f, (x.requires_grad_(), weight, bias), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_equals_the_modules_with_running_statistics(channels_last, dtype, tol):
    """float64 bounds the rounding tightly; float32, the dtype Conv-4 trains in, at its own precision."""
    torch.manual_seed(0)
    norm, pool = modules(5, dtype)
    reference = copy.deepcopy(norm)
    x = torch.randn(6, 5, 10, 10, dtype=dtype) * 3 + 1
    x[:, :, :4] = 0.5  # a flat band: tied window maxima, as on Omniglot's blank background
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert fusable(norm, pool, x)
    for _ in range(2):  # two batches: the running statistics move twice
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = batch_norm_max_pool_relu(norm, pool, xa), unfused(reference, pool, xb)
        g = torch.linspace(-1, 1, out_a.numel(), dtype=dtype).view_as(out_a)
        grads_a = torch.autograd.grad(out_a, (xa, norm.weight, norm.bias), g)
        grads_b = torch.autograd.grad(out_b, (xb, reference.weight, reference.bias), g)
        torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol)
        for a, b in zip(grads_a, grads_b):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())
        if channels_last:
            assert grads_a[0].is_contiguous(memory_format=torch.channels_last)
        x = x * 0.5 + 0.2
    for a, b in zip(norm.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert norm.num_batches_tracked.item() == 2


@pytest.mark.parametrize("bn", [{"momentum": None}, {"track_running_stats": False}])
def test_cumulative_average_and_no_running_statistics(bn):
    torch.manual_seed(1)
    norm, pool = modules(3, **bn)
    reference = copy.deepcopy(norm)
    for step in range(3):
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64) + step
        torch.testing.assert_close(batch_norm_max_pool_relu(norm, pool, x), unfused(reference, pool, x))
    for a, b in zip(norm.buffers(), reference.buffers()):
        assert torch.equal(a, b) if a.dtype == torch.long else torch.allclose(a, b, rtol=1e-12)


def test_steps_aside_where_the_identity_does_not_hold():
    """Which calls fuse, in float32 (the dtype Conv-4 trains in); nothing is computed."""
    norm, pool = modules(3, torch.float32)
    x = torch.randn(2, 3, 8, 8)
    assert fusable(norm, pool, x)
    with torch.no_grad():
        norm.weight[1] = -0.5  # a decreasing affine map: the max-pool no longer commutes with it
    assert not fusable(norm, pool, x)
    with torch.no_grad():
        norm.weight[1] = 0.0
    assert not fusable(norm, pool, x)
    norm.weight.data.fill_(1.0)
    assert not fusable(norm.eval(), pool, x)  # eval: Conv-4 folds the BN into the conv instead
    assert not fusable(norm.train(), nn.MaxPool2d(2, return_indices=True), x)
    assert not fusable(nn.BatchNorm2d(3, affine=False), pool, x)


def test_conv4_training_with_a_negative_weight_is_the_unfused_network_exactly():
    """The default Conv-4 (float32, channels_last) as it trains: where the fusion steps aside, bit for bit."""
    torch.manual_seed(0)
    fused = Conv4(3, hidden=8, out_channels=8)
    with torch.no_grad():
        for block in fused.layers:
            block[1].weight[0] = -1.0
    plain = copy.deepcopy(fused)
    plain.fuse_norm_pool = False
    x = torch.randn(6, 3, 20, 20)
    assert torch.equal(fused(x), plain(x))


def test_conv4_is_the_unfused_network_up_to_rounding():
    """The default Conv-4 (float32, channels_last) as it trains. float32 on purpose: there the fused path rounds
    differently from the modules, which shows that it ran (in float64 the outputs come out bit-identical);
    test_equals_the_modules_with_running_statistics bounds the float64 rounding."""
    torch.manual_seed(0)
    fused = Conv4(3, hidden=8, out_channels=8)
    plain = copy.deepcopy(fused)
    plain.fuse_norm_pool = False
    x = torch.rand(10, 3, 28, 28)
    x[:, :, :8] = 0.0  # blank rows: ties in the first block's windows
    out_fused, out_plain = fused(x), plain(x)
    assert not torch.equal(out_fused, out_plain)  # the fused path ran (affine after the max: other rounding)
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-5, atol=1e-5)
    (out_fused * torch.linspace(-1, 1, out_fused.numel()).view_as(out_fused)).sum().backward()
    (out_plain * torch.linspace(-1, 1, out_plain.numel()).view_as(out_plain)).sum().backward()
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    for a, b in zip(fused.parameters(), plain.parameters()):  # (a conv bias before BN has a zero gradient: noise)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale)


def test_double_backward_is_refused():
    """A second-order method through it gets an error, not a silently first-order gradient (MAML swaps the
    encoder's BN for TaskBatchNorm, so it never runs this function)."""
    norm, pool = modules(2)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(batch_norm_max_pool_relu(norm, pool, x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()
