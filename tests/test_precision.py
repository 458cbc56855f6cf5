"""Float32 islands under bf16 autocast (fewshot_exp/precision.py): the small products after the encoder whose
terms nearly cancel give float32 results under `train.amp`, where bf16 would swamp them. float32 and bf16 on purpose
(the dtypes under test), against float32 references or, for batch norm of an NCHW map, float64."""

from __future__ import annotations

import torch

from fewshot_exp.algorithms.base import class_means
from fewshot_exp.algorithms.maml import composite_batch_norm, linear_head, prototype_head
from fewshot_exp.distances import Distance
from fewshot_exp.precision import float32


def embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries [1, 12, 64] near prototypes [1, 4, 64] of norm ~40: squared distances ~0.6 against norms^2 ~1600."""
    g = torch.Generator().manual_seed(seed)
    prototypes = 5 * torch.randn(1, 4, 64, generator=g)
    queries = prototypes.repeat_interleave(3, 1) + 0.1 * torch.randn(1, 12, 64, generator=g)
    return queries, prototypes


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_distances_under_autocast_are_the_float32_ones():
    q, p = embeddings()
    for name in ("l2", "cosine", "dot"):
        distance = Distance(name)
        with bf16_autocast():
            amp = distance(q, p)
        assert amp.dtype == torch.float32
        torch.testing.assert_close(amp, distance(q, p), rtol=1e-5, atol=1e-5)


def test_bf16_would_swamp_the_squared_distance():
    """What the island prevents: the same formula with its product in bf16 is off by more than the distances."""
    q, p = embeddings()
    exact = Distance("l2")(q, p)
    with bf16_autocast():
        product = q @ p.transpose(1, 2)
    assert product.dtype == torch.bfloat16
    swamped = -(q.pow(2).sum(-1, keepdim=True) - 2 * product.float() + p.pow(2).sum(-1).unsqueeze(1))
    nearest = exact.max(-1).values
    assert (swamped - exact).abs().max() > nearest.abs().max()


def test_protomaml_head_and_class_means_under_autocast_are_float32():
    q, p = embeddings()
    z = q[0].to(torch.bfloat16)  # an encoder's bf16 output
    labels = torch.arange(4).repeat_interleave(3)
    reference_head = prototype_head(z.float(), labels, 4)
    with bf16_autocast():
        head = prototype_head(z, labels, 4)
        logits = linear_head(z, head["weight"], head["bias"])
        means = class_means(z[None], labels[None], 4)
    assert head["weight"].dtype == logits.dtype == means.dtype == torch.float32
    torch.testing.assert_close(head["weight"], reference_head["weight"])
    torch.testing.assert_close(head["bias"], reference_head["bias"])
    torch.testing.assert_close(logits, linear_head(z.float(), reference_head["weight"], reference_head["bias"]))
    torch.testing.assert_close(means, class_means(z[None].float(), labels[None], 4))


def test_outside_autocast_the_function_is_called_unchanged():
    seen = []
    wrapped = float32(lambda x: seen.append(x.dtype) or x)
    x = torch.ones(2, dtype=torch.bfloat16)
    assert wrapped(x) is x and seen == [torch.bfloat16]
    with bf16_autocast():
        assert wrapped(x).dtype == torch.float32 and seen[-1] == torch.float32


def test_vmap_batch_norm_under_autocast_takes_float32_statistics():
    """MAML's vectorised batch norm (CUDA's default path) on a bf16 map with mean ~4 and std ~0.5: the float32
    island matches float64 within 1e-4; statistics taken in bf16 are off by more than ten times that."""
    g = torch.Generator().manual_seed(0)
    x = (4 + 0.5 * torch.randn(16, 8, 6, 6, generator=g)).to(torch.bfloat16)  # a conv's bf16 output
    weight, bias = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g)
    exact = composite_batch_norm(x.double(), weight.double(), bias.double(), 1e-5)
    with bf16_autocast():
        amp = composite_batch_norm(x, weight, bias, 1e-5)
    assert amp.dtype == torch.float32
    island = (amp.double() - exact).abs().max()
    in_bf16 = composite_batch_norm.__wrapped__(x, weight.to(x.dtype), bias.to(x.dtype), 1e-5).double() - exact
    assert island < 1e-4 < in_bf16.abs().max() / 10
