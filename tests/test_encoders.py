"""Conv-4's fast paths give the textbook numbers: conv - BN - maxpool - ReLU equals conv - BN - ReLU - maxpool
bit for bit, and eval mode's BN folded into the conv equals conv then BN up to float rounding. (Training's fused
BN + max-pool + ReLU, `fuse_norm_pool`, is tested in tests/test_norm_pool.py; here it is off where bit-identity
with the modules is the point.) Bit-identity is checked in the default float32, comparisons up to rounding in float64
(and the fold also in float32, the bound encoders/conv4.py quotes); NCHW and channels_last as each test says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshot_exp.encoders.conv4 import Conv4


def textbook_features(encoder: Conv4, x: torch.Tensor, pooled_blocks: int | None) -> torch.Tensor:
    """Each block as its nn.Sequential runs it: ReLU before the max-pool."""
    if encoder.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for i, block in enumerate(encoder.layers):
        x = block(x) if pooled_blocks is None or i < pooled_blocks else block[:-1](x)
    return x


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("pooled_blocks", [None, 2])
def test_pool_before_relu_gives_identical_outputs_and_gradients(channels_last, pooled_blocks):
    """Bit for bit in float32, the default dtype, in both layouts."""
    torch.manual_seed(0)
    encoder = Conv4(in_channels=3, hidden=8, out_channels=8, channels_last=channels_last, fuse_norm_pool=False)
    x = torch.randn(6, 3, 20, 20)
    results = []
    for features in (encoder.features, lambda x, p: textbook_features(encoder, x, p)):
        encoder.zero_grad()
        out = features(x, pooled_blocks)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in encoder.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert any(g.abs().sum() > 0 for g in grads_a)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_eval_mode_folds_batch_norm_into_the_conv_up_to_rounding(dtype, tol):
    """The default channels_last Conv-4, whose eval path the fold is: float64 bounds the rounding tightly, float32
    checks it at the precision evaluation runs in."""
    torch.manual_seed(0)
    encoder = Conv4(in_channels=3, hidden=8, out_channels=8).to(dtype)
    with torch.no_grad():  # running statistics and affine parameters away from their identity inits
        for block in encoder.layers:
            norm = block[1]
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    encoder.eval()
    x = torch.randn(6, 3, 20, 20, dtype=dtype)
    with torch.no_grad():
        folded, textbook = encoder.features(x), textbook_features(encoder, x, None)
    assert not torch.equal(folded, textbook)  # the folded path ran
    torch.testing.assert_close(folded, textbook, rtol=tol, atol=tol)
    encoder.train()
    encoder.fuse_norm_pool = False
    assert torch.equal(encoder.features(x), textbook_features(encoder, x, None))  # training: batch statistics


def test_evaluation_max_pool_without_indices_is_exact():
    """Under no_grad a channels_last Conv-4 pools even-sized maps by pairwise maxima: the same values as the kernel,
    ties included (flat image regions give equal activations); channels_last, bit for bit in float32."""
    from fewshot_exp.encoders.conv4 import max_pool_2x2_nhwc

    x = torch.randn(3, 8, 6, 10).round(decimals=1).contiguous(memory_format=torch.channels_last)  # many ties
    pooled = max_pool_2x2_nhwc(x)
    assert torch.equal(pooled, torch.nn.functional.max_pool2d(x, 2))
    assert pooled.is_contiguous(memory_format=torch.channels_last)

    torch.manual_seed(0)
    net = Conv4(1, hidden=8, out_channels=8).eval()
    images = torch.rand(5, 1, 28, 28)  # 28 -> 14 -> 7 (odd: the kernel) -> 3 -> 1
    images[:, :, :10] = 0.0  # a blank band, as on Omniglot's background
    with torch.no_grad():
        fast = net(images)
    assert torch.equal(fast, net(images).detach())  # with autograd on, every block uses the kernel


def finn_omniglot_net(encoder: Conv4, x: torch.Tensor) -> torch.Tensor:
    """Finn et al.'s Omniglot network written out: 4 x [stride-2 conv3x3 - batch-statistics BN - ReLU], then the
    mean over space."""
    for conv, norm, _, _ in encoder.layers:
        x = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
        x = F.relu(F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps))
    return x.mean((2, 3))


@pytest.mark.parametrize("channels_last", [True, False])
def test_strided_conv4_is_finn_et_al_s_omniglot_network(channels_last):
    """float64, in both layouts."""
    torch.manual_seed(0)
    encoder = Conv4(in_channels=1, hidden=8, out_channels=16, channels_last=channels_last, downsample="stride")
    encoder = encoder.double()
    assert [tuple(block[0].stride) for block in encoder.layers] == [(2, 2)] * 4
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    assert encoder.features(x).shape == (6, 16, 2, 2)  # 28 -> 14 -> 7 -> 4 -> 2 px
    out = encoder(x)
    assert out.shape == (6, 16)
    torch.testing.assert_close(out, finn_omniglot_net(encoder, x), rtol=1e-12, atol=1e-12)
    encoder.eval()  # running statistics (now updated by the forward above), BN folded into the strided conv
    with torch.no_grad():
        unfolded = x
        for conv, norm, relu, _ in encoder.layers:
            unfolded = relu(norm(conv(unfolded)))
        torch.testing.assert_close(encoder(x), unfolded.mean((2, 3)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pooled_blocks must be None"):
        encoder.features(x, 2)
    with pytest.raises(ValueError, match="downsample must be one of"):
        Conv4(downsample="avgpool")


@pytest.mark.parametrize("channels_last", [True, False])
def test_conv4_without_its_last_max_pools_embeds_the_unpooled_maps(channels_last):
    torch.manual_seed(0)
    encoder = Conv4(in_channels=1, hidden=8, out_channels=16, channels_last=channels_last, pooled_blocks=3)
    x = torch.randn(6, 1, 28, 28)
    out = encoder(x)
    assert out.shape == (6, 16 * 3 * 3)  # 28 -> 14 -> 7 -> 3 px, the last block keeps its 3 x 3 map
    torch.testing.assert_close(out, encoder.features(x, 3).flatten(1))
    assert Conv4(in_channels=1, hidden=8, out_channels=16)(x).shape == (6, 16)  # all four pools: 1 x 1
    with pytest.raises(ValueError, match="pooled_blocks must be None or 0-4"):
        Conv4(pooled_blocks=5)
