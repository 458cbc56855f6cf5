"""Image encoders: x [B, C, H, W] -> embeddings [B, D]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_exp.norm_pool import batch_norm_max_pool_relu, fusable


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def folds(norm: nn.Module) -> bool:
    """An eval-mode BatchNorm with running statistics: an affine map that can be folded into the conv before it."""
    return isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None and norm.affine


def conv_bn_eval(conv: nn.Conv2d, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """norm(conv(x)) for an eval-mode BN as one conv: with s = gamma / sqrt(running_var + eps), the weights W s and
    bias (b - running_mean) s + beta. Equal up to float rounding (~1e-6 relative, tests/test_encoders.py); saves
    BN's pass over the conv output."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding, conv.dilation)


def max_pool_2x2_nhwc(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2) of a channels_last map with even sides, as two pairwise maxima over its NHWC view.

    Exactly the same values (a max is a max); 1.4-1.9x faster than the max-pool kernel on Conv-4's 28 and 14 px
    maps on this CPU, which also computes the argmax indices. Without those indices there is no max-pool backward,
    so it is used only when autograd is off (evaluation)."""
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c)
    rows = torch.maximum(v[:, :, 0], v[:, :, 1])  # [n, h/2, w/2, 2, c]
    return torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).permute(0, 3, 1, 2)


def pooled(pool: nn.MaxPool2d, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """pool(x); in evaluation, on an even-sized channels_last map, by `max_pool_2x2_nhwc`."""
    fast = channels_last and not torch.is_grad_enabled() and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    if fast and x.is_contiguous(memory_format=torch.channels_last):
        return max_pool_2x2_nhwc(x)
    return pool(x)


class Conv4(nn.Module):
    """Conv-4 (Vinyals et al. 2016; Snell et al. 2017): 4 x [conv3x3 - BN - ReLU - maxpool2].

    28 px inputs give a 64-d embedding, 84 px inputs 1600-d (64 x 5 x 5).
    `channels_last` runs the convolutions in NHWC memory format (faster on CPU and GPU).
    Each block runs as conv - BN - maxpool - ReLU, which gives bit-identical outputs and gradients
    (tests/test_encoders.py) and is faster on CPU (`python -m benchmarks.run`); in eval mode the BN
    (running statistics) is folded into the conv. In training on CPU, `fuse_norm_pool` runs BN, max-pool and
    ReLU as one autograd function (`fewshot_exp.norm_pool`: the same function up to float rounding, fewer passes
    over the conv output); `fuse_norm_pool=False` keeps the modules' own kernels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        out_channels: int = 64,
        channels_last: bool = True,
        fuse_norm_pool: bool = True,
    ):
        super().__init__()
        self.layers = nn.Sequential(
            conv_block(in_channels, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, out_channels),
        )
        self.out_channels = out_channels
        self.channels_last = channels_last
        self.fuse_norm_pool = fuse_norm_pool
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor, pooled_blocks: int | None = None) -> torch.Tensor:
        """Un-flattened feature maps [B, out_channels, h, w].

        `pooled_blocks`: how many blocks (from the first) end in their 2x2 max-pool; None = all 4. The
        weights are the same either way (pooling has none); Relation Networks pool only the first 2.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, (conv, norm, relu, pool) in enumerate(self.layers):
            pools = pooled_blocks is None or i < pooled_blocks
            if pools and self.fuse_norm_pool and fusable(norm, pool, x):
                x = batch_norm_max_pool_relu(norm, pool, conv(x))  # training-mode BN, max-pool and ReLU in one
                continue
            x = conv_bn_eval(conv, norm, x) if folds(norm) else norm(conv(x))
            # relu(maxpool(x)) == maxpool(relu(x)), gradients included (ReLU is monotone and zeroes the gradient
            # wherever a window's max is <= 0), with the ReLU and its backward on 4x fewer values.
            x = relu(pooled(pool, x, self.channels_last)) if pools else relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)
