"""ResNet-12, the standard few-shot backbone (Oreshkin et al., TADAM, NeurIPS 2018; Lee et al., MetaOptNet,
CVPR 2019), with DropBlock (Ghiasi, Lin & Le, NeurIPS 2018).

Four residual blocks of widths `channels` (default 64-160-320-640). Each block is

    h = LeakyReLU_0.1(BN(conv3x3(x)));  h = LeakyReLU_0.1(BN(conv3x3(h)));  h = BN(conv3x3(h))
    y = maxpool2x2(LeakyReLU_0.1(h + BN(conv1x1(x))))

and the embedding is the global average of the last block's map: 640-d at any input size (84 px leaves
a 5x5 map, 28 px a 1x1 map).

Regularisation (`drop_block: true`, MetaOptNet's scheme): dropout of rate `drop_rate` after blocks 1-2 and
DropBlock after blocks 3-4, which zeroes whole `block_size` x `block_size` squares of a feature map. Its
seed rate is chosen so that about `drop_rate` of the units are dropped (Ghiasi et al., eq. 1):

    gamma = drop_rate / block_size^2 * (h * w) / ((h - block_size + 1) * (w - block_size + 1))

and the kept units are rescaled by (units / kept units). `block_size` is capped at the map size (28 px
inputs leave a 3x3 map after block 3). Both are active in training mode only. Differences from MetaOptNet:
the drop rate is constant (MetaOptNet ramps it up over the first 20000 batches) and the embedding is
globally average-pooled (MetaOptNet flattens the 640 x 5 x 5 map).

DropBlock is written here rather than taken from `torchvision.ops.drop_block2d`, which draws its seeds
in place on an unbatched tensor and so cannot run under `torch.func.vmap` (MAML's vectorised inner loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_exp.encoders.base import EncoderConfig
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


@register("encoder", "resnet12")
@dataclass
class ResNet12Config(EncoderConfig):
    _target_: str = "fewshot_exp.encoders.resnet12.ResNet12"
    channels: list[int] = field(default_factory=lambda: [64, 160, 320, 640])  # widths of the 4 residual blocks
    drop_block: bool = False  # dropout after blocks 1-2, DropBlock after blocks 3-4 (MetaOptNet), training only
    drop_rate: float = 0.1  # fraction of units dropped (only with drop_block)
    block_size: int = 5  # DropBlock square side, capped at the feature map size
    channels_last: bool = True


def drop_block(x: torch.Tensor, drop_rate: float, block_size: int, eps: float = 1e-6) -> torch.Tensor:
    """DropBlock of a [B, C, H, W] map: zero random `block_size` squares, about `drop_rate` of the units."""
    h, w = x.shape[-2:]
    bs = min(block_size, h, w)
    gamma = drop_rate / bs**2 * (h * w) / ((h - bs + 1) * (w - bs + 1))
    seeds = (torch.rand(*x.shape[:-2], h - bs + 1, w - bs + 1, dtype=x.dtype, device=x.device) < gamma).to(x.dtype)
    # every seed covers the bs x bs square that starts at it: pad, then a stride-1 max-pool
    dropped = F.max_pool2d(F.pad(seeds, [bs - 1] * 4), bs, stride=1)  # [..., H, W]
    keep = 1 - dropped
    return x * keep * (keep.numel() / (keep.sum() + eps))


class ResBlock(nn.Module):
    """Three conv3x3-BN-LeakyReLU(0.1) (the last activation after the 1x1-conv-BN shortcut is added), then maxpool2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()

        def conv_bn(cin: int, kernel: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, out_channels, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_channels)
            )

        self.conv1, self.conv2, self.conv3 = conv_bn(in_channels, 3), conv_bn(out_channels, 3), conv_bn(out_channels, 3)
        self.shortcut = conv_bn(in_channels, 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor, pool: bool = True) -> torch.Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = self.act(self.conv3(h) + self.shortcut(x))
        return F.max_pool2d(h, 2) if pool else h


class ResNet12(nn.Module):
    """ResNet-12: x [B, C, H, W] -> embeddings [B, channels[-1]] (see the module docstring).

    Same interface as Conv-4: `features(x, pooled_blocks)` gives the maps (Relation Network), `out_channels`
    their width, `channels_last` the NHWC memory format (read at call time; MAML's vmap turns it off).
    """

    min_image_size = 16  # each of the 4 blocks halves the map: below 16 px the last block has no pixel left

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 160, 320, 640),
        drop_block: bool = False,
        drop_rate: float = 0.1,
        block_size: int = 5,
        channels_last: bool = True,
    ):
        super().__init__()
        channels = list(channels)
        if len(channels) != 4 or min(channels) < 1:
            raise UserError(f"encoder.channels must be 4 positive widths, got {channels}")
        if not 0 <= drop_rate < 1:
            raise UserError(f"encoder.drop_rate must be in [0, 1), got {drop_rate}")
        if block_size < 1:
            raise UserError(f"encoder.block_size must be positive, got {block_size}")
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(ResBlock(widths[i], widths[i + 1]) for i in range(4))
        self.drop_rate = drop_rate if drop_block else 0.0
        self.block_size = block_size
        self.out_channels = channels[-1]
        self.channels_last = channels_last
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def regularise(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Dropout after blocks 1-2, DropBlock after blocks 3-4; identity in eval mode or without drop_block."""
        if not self.training or self.drop_rate == 0:
            return x
        return F.dropout(x, self.drop_rate) if block < 2 else drop_block(x, self.drop_rate, self.block_size)

    def features(self, x: torch.Tensor, pooled_blocks: int | None = None) -> torch.Tensor:
        """Feature maps [B, out_channels, h, w]; only the first `pooled_blocks` blocks max-pool (None = all 4)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, block in enumerate(self.blocks):
            x = self.regularise(block(x, pool=pooled_blocks is None or i < pooled_blocks), i)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((-2, -1))
