"""The short double backward of batch norm (fewshot_exp/encoders/task_batch_norm.py) against finite differences and
against PyTorch's own double backward of F.batch_norm, also under torch.func.grad as MAML's inner loop calls it
(float64; [M, C] rows, the view a channels_last map is normalised as, and NCHW maps)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad

from fewshot_exp.encoders.task_batch_norm import batch_norm

SHAPES = [(7, 3), (4, 3, 3, 2)]  # rows [M, C] (a channels_last map's view) and an NCHW map


def inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    weight = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
    return x, weight, torch.randn(shape[1], generator=g, dtype=torch.float64)


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)


def ours(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return batch_norm(x, weight, bias, 1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_first_and_second_derivatives_match_finite_differences(shape):
    args = tuple(t.requires_grad_() for t in inputs(shape))
    assert torch.autograd.gradcheck(ours, args)
    assert torch.autograd.gradgradcheck(ours, args)


@pytest.mark.parametrize("shape", SHAPES)
def test_second_derivatives_equal_pytorchs_double_backward(shape):
    results = []
    for fn in (ours, reference):
        x, w, b = (t.requires_grad_() for t in inputs(shape))
        y = fn(x, w, b)
        gx, gw, gb = torch.autograd.grad((y * torch.sin(y)).sum(), (x, w, b), create_graph=True)
        # every output of the backward feeds the second derivative, gb through a product with gx
        outer = gx.pow(2).sum() + gw.pow(3).sum() + gb.pow(2).sum() * gx.sum()
        results.append([y, gx, gw, gb, *torch.autograd.grad(outer, (x, w, b))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_inner_gradient_by_torch_func_and_meta_gradient_equal_pytorchs():
    """MAML's pattern: torch.func.grad of a loss w.r.t. fast weights, one SGD step, then autograd of a second loss
    w.r.t. the starting weights (second order through the inner gradient)."""
    results = []
    for fn in (ours, reference):
        x, w, b = inputs((5, 3, 4, 4), seed=1)
        w.requires_grad_(), b.requires_grad_()

        def inner_loss(weights, fn=fn, x=x):
            return (fn(x, *weights) * torch.cos(x)).pow(2).sum()

        gw, gb = grad(inner_loss)((w, b))
        fast = (w - 0.1 * gw, b - 0.1 * gb)
        results.append(torch.autograd.grad(fn(x * 0.5, *fast).pow(3).sum(), (w, b)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
