"""Conv-4 (`encoder=conv4`, Vinyals et al. 2016; Snell et al. 2017): four conv3x3 - batch norm - ReLU blocks,
each halving the map by a 2x2 max-pool or a stride-2 convolution."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_exp.encoders.base import EncoderConfig
from fewshot_exp.encoders.norm_pool import batch_norm_max_pool_relu, fusable
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


class Downsample(Enum):
    maxpool = "maxpool"  # conv3x3 - BN - ReLU - 2x2 max-pool (Vinyals et al., Snell et al.)
    stride = "stride"  # stride-2 conv3x3 - BN - ReLU, maps averaged at the end (Finn et al.'s Omniglot network)


DOWNSAMPLE = tuple(d.value for d in Downsample)


@register("encoder", "conv4")
@dataclass
class Conv4Config(EncoderConfig):
    _target_: str = "fewshot_exp.encoders.conv4.Conv4"
    hidden: int = 64
    out_channels: int = 64
    channels_last: bool = True
    fuse_norm_pool: bool = True  # training on CPU: BN, max-pool and ReLU as one autograd function (norm_pool.py)
    downsample: Downsample = Downsample.maxpool  # or stride: stride-2 convolutions, no max-pool, maps averaged
    pooled_blocks: int | None = None  # blocks (from the first) that end in a max-pool; None = all 4


def conv_block(in_channels: int, out_channels: int, downsample: str = "maxpool") -> nn.Sequential:
    """conv3x3 - BN - ReLU - maxpool2, or with `downsample="stride"` a stride-2 conv3x3 - BN - ReLU (an Identity
    stands in for the pool, so both have the same parameters and state-dict keys)."""
    stride = 2 if downsample == "stride" else 1
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2) if downsample == "maxpool" else nn.Identity(),
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

    Exactly the same values (a max is a max), and faster on CPU than the max-pool kernel, which also computes the
    argmax indices (`python -m benchmarks.run --rows protonet-eval` times evaluation). Without those indices there
    is no max-pool backward, so it is used only when autograd is off (evaluation)."""
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

    28 px inputs give a 64-d embedding, 84 px inputs 1600-d (64 x 5 x 5). `pooled_blocks=3` leaves out the last
    max-pool, which keeps the last map's layout: 576-d (64 x 3 x 3) at 28 px, at the same cost.
    `channels_last` runs the convolutions in NHWC memory format (faster on CPU and GPU).
    Each block runs as conv - BN - maxpool - ReLU, which gives bit-identical outputs and gradients
    (tests/test_encoders.py) and is faster on CPU (`python -m benchmarks.run`); in eval mode the BN
    (running statistics) is folded into the conv. In training on CPU, `fuse_norm_pool` runs BN, max-pool and
    ReLU as one autograd function (`fewshot_exp.encoders.norm_pool`: the same function up to float rounding, fewer
    passes over the conv output); `fuse_norm_pool=False` keeps the modules' own kernels.

    `downsample="stride"` is Finn et al.'s (2017) Omniglot network: stride-2 convolutions instead of max-pooling
    (28 -> 14 -> 7 -> 4 -> 2 px) and the last maps averaged over space, so the embedding has `out_channels`
    dimensions at any image size.
    """

    min_image_size = 16  # each of the 4 blocks halves the map: below 16 px the last block has no pixel left

    @staticmethod
    def check_config(cfg: Any) -> None:
        """`encoder.pooled_blocks` of the composed config `cfg`, before any work."""
        pooled = cfg.encoder.get("pooled_blocks")
        downsample = getattr(cfg.encoder.get("downsample"), "value", cfg.encoder.get("downsample"))
        if pooled is not None and (not 0 <= pooled <= 4 or downsample == "stride"):
            raise UserError(
                f"encoder.pooled_blocks={pooled} must be in 0..4 or null (= all 4), with encoder.downsample=maxpool "
                "(a strided Conv-4 downsamples in every block)"
            )

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        out_channels: int = 64,
        channels_last: bool = True,
        fuse_norm_pool: bool = True,
        downsample: object = "maxpool",
        pooled_blocks: int | None = None,
    ):
        super().__init__()
        self.downsample = getattr(downsample, "value", downsample)  # an Enum member from the config, or a str
        if self.downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE}, got {downsample!r}")
        widths = [in_channels, hidden, hidden, hidden, out_channels]
        self.layers = nn.Sequential(*(conv_block(a, b, self.downsample) for a, b in zip(widths, widths[1:])))
        if pooled_blocks is not None and (self.downsample == "stride" or not 0 <= pooled_blocks <= 4):
            raise ValueError(f"pooled_blocks must be None or 0-4 with max-pooling, got {pooled_blocks!r}")
        self.pooled_blocks = pooled_blocks
        self.out_channels = out_channels
        self.channels_last = channels_last
        self.fuse_norm_pool = fuse_norm_pool
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor, pooled_blocks: int | None = None) -> torch.Tensor:
        """Un-flattened feature maps [B, out_channels, h, w].

        `pooled_blocks`: how many blocks (from the first) end in their 2x2 max-pool; None = all 4. The
        weights are the same either way (pooling has none); Relation Networks pool only the first 2. A strided
        Conv-4 always downsamples, so it takes only None.
        """
        if pooled_blocks is not None and self.downsample == "stride":
            raise ValueError("a strided Conv-4 downsamples in every block; pooled_blocks must be None")
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
            x = relu(pooled(pool, x, self.channels_last)) if pools and isinstance(pool, nn.MaxPool2d) else relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x, self.pooled_blocks)
        return maps.mean((2, 3)) if self.downsample == "stride" else maps.flatten(1)
