"""Augmentation of training episodes and per-channel normalisation, as batched tensor ops on the device.

`Augment` draws independent parameters for every image of an episode from the training sampler's
`torch.Generator` (saved in `last.pt`, so a resumed run draws the same ones) and applies

- one warp per image, `x_in = C · A · F · x_out + D(x_out)` in normalised coordinates, sampled with
  `grid_sample` (bilinear, zeros outside): F a horizontal flip (probability 1/2), A a small affine
  (rotation θ ∈ [−rotate, rotate]°, horizontal shear φ ∈ [−shear, shear]°, zoom s ∈ `scale`,
  shift t ∈ [−translate, translate] of the image), C a random resized crop (area fraction
  a ∈ `crop_scale`, log-uniform aspect ratio r ∈ `crop_ratio`: crop width √(a·r), height √(a/r),
  placed uniformly inside the image, as torchvision's `RandomResizedCrop`), D an elastic
  distortion (Simard et al. 2003): a displacement of up to `elastic` of the image per axis, drawn
  uniformly on a 4×4 grid of control points and interpolated bicubically, so it varies smoothly
  over the image;
- a stroke-thickness change (`thickness` = τ): with t ∈ [−τ, τ], `x ← (1 − |t|)·x + |t|·M(x)`
  where M is a 3×3 grey dilation (max filter) for t > 0 and erosion (min filter) for t < 0;
- colour jitter (brightness, contrast, saturation, in that order, as torchvision's `ColorJitter`
  with factors f ∈ [1 − b, 1 + b]): `x ← clamp(f·x + (1 − f)·d)` with d = 0 (brightness), the
  image's mean grey level (contrast), its grey image (saturation, colour images only).

The same number of random numbers is drawn whatever is switched on, so episodes do not depend on
which augmentations are enabled beyond their effect. With `augment.enabled=false` nothing is drawn
and training episodes are exactly those of an unaugmented run.

`Normalize` maps [0, 1] pixels to `(x − mean) / std` with the per-channel statistics of the
training split, for training, validation, test and cross-domain test images alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError

ELASTIC_GRID = 4  # control points per side of the elastic displacement field
N_WARP = 10  # uniforms of the flip, affine and crop
N_COLOUR = 4  # uniforms of the thickness and the colour jitter
N_DRAWS = N_WARP + N_COLOUR + 2 * ELASTIC_GRID**2  # uniform numbers drawn per image


@dataclass
class AugmentConfig:
    """`dataset.augment`: random augmentation of training episodes; the identity where unset."""

    enabled: bool = False
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random resized crop: area fraction
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # ... and aspect ratio range
    flip: bool = False  # horizontal flip with probability 1/2
    brightness: float = 0.0  # colour jitter: factors drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    rotate: float = 0.0  # small affine: rotation in [-rotate, rotate] degrees
    translate: float = 0.0  # ... shift up to this fraction of the image size
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # ... zoom range
    shear: float = 0.0  # ... horizontal shear in [-shear, shear] degrees
    elastic: float = 0.0  # elastic distortion: smooth displacements up to this fraction of the image
    thickness: float = 0.0  # stroke thickness: blend in [-t, t] towards a 3x3 erosion (-) or dilation (+)


def natural_images() -> AugmentConfig:
    """On by default for photographs (CIFAR, mini-ImageNet, a folder): random resized crop of 0.5-1 of the area,
    horizontal flip and colour jitter of 0.4."""
    return AugmentConfig(
        enabled=True,
        crop_scale=[0.5, 1.0],
        crop_ratio=[0.75, 1.3333333],
        flip=True,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
    )


def characters() -> AugmentConfig:
    """Off by default for characters (glyphs, Omniglot); when enabled, an affine of up to 10 degrees, 10% shift and
    0.9-1.1 zoom."""
    return AugmentConfig(rotate=10.0, translate=0.1, scale=[0.9, 1.1])


def _range(name: str, values: Any, low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in values) if len(values) == 2 else (math.nan, math.nan)
    if not (low <= lo <= hi <= high):
        raise UserError(f"dataset.augment.{name} must be [min, max] with {low} <= min <= max <= {high}, got {values}")
    return lo, hi


class Augment:
    """Random per-image flip, affine warp, resized crop and colour jitter of a batch of [0, 1] images."""

    def __init__(self, cfg: Any) -> None:
        self.crop_scale = _range("crop_scale", cfg.crop_scale, 1e-3, 1.0)
        self.crop_ratio = _range("crop_ratio", cfg.crop_ratio, 1e-2, 1e2)
        self.scale = _range("scale", cfg.scale, 1e-2, 1e2)
        for key in ("brightness", "contrast", "saturation"):
            if not 0 <= cfg[key] <= 1:
                raise UserError(f"dataset.augment.{key} must be in [0, 1], got {cfg[key]}")
        for key, high in (("translate", 1), ("rotate", 180), ("shear", 60), ("elastic", 1), ("thickness", 1)):
            if not 0 <= cfg[key] <= high:
                raise UserError(f"dataset.augment.{key} must be in [0, {high}], got {cfg[key]}")
        self.flip, self.rotate, self.translate = bool(cfg.flip), float(cfg.rotate), float(cfg.translate)
        self.shear, self.elastic, self.thickness = float(cfg.shear), float(cfg.elastic), float(cfg.thickness)
        self.jitter = (float(cfg.brightness), float(cfg.contrast), float(cfg.saturation))
        self.crop = self.crop_scale != (1.0, 1.0)
        affine = self.rotate or self.shear or self.translate or self.scale != (1.0, 1.0)
        self.geometric = self.flip or affine or self.crop or self.elastic
        self.identity = not (self.geometric or self.thickness or any(self.jitter))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: [B, C, H, W] float in [0, 1] -> augmented [B, C, H, W]."""
        u = torch.rand(x.shape[0], N_DRAWS, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        warp, tone, field = u[:, :N_WARP], u[:, N_WARP : N_WARP + N_COLOUR], u[:, N_WARP + N_COLOUR :]
        if self.geometric:
            grid = F.affine_grid(self.warp(warp), list(x.shape), align_corners=False)  # [B, H, W, 2]
            if self.elastic:
                grid = grid + self.displacement(field, x.shape[-2:])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.thickness:
            x = self.stroke_width(x, tone[:, 0])
        return self.colour(x, tone[:, 1:])

    def warp(self, u: torch.Tensor) -> torch.Tensor:
        """[B, 2, 3] affine matrices (output -> input coordinates) C · A · F from 10 uniforms per image."""
        one, zero = torch.ones_like(u[:, 0]), torch.zeros_like(u[:, 0])
        sign = torch.where(u[:, 0] < 0.5, -one, one) if self.flip else one
        flip = _matrix(sign, zero, zero, zero, one, zero)
        angle = torch.deg2rad((2 * u[:, 1] - 1) * self.rotate)
        zoom = _lerp(self.scale, u[:, 2])
        shift_x, shift_y = (2 * u[:, 3] - 1) * 2 * self.translate, (2 * u[:, 4] - 1) * 2 * self.translate
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        shear = torch.tan(torch.deg2rad((2 * u[:, 9] - 1) * self.shear))
        affine = _matrix(cos, -sin, shift_x, sin, cos, shift_y) @ _matrix(one, shear, zero, zero, one, zero)
        if not self.crop:
            return (affine @ flip)[:, :2]  # [B, 2, 3]
        area = _lerp(self.crop_scale, u[:, 5])
        log_ratio = _lerp((math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])), u[:, 6])
        w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
        h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        cx, cy = (2 * u[:, 7] - 1) * (1 - w), (2 * u[:, 8] - 1) * (1 - h)  # centre: the crop stays inside
        crop = _matrix(w, zero, cx, zero, h, cy)
        return (crop @ affine @ flip)[:, :2]  # [B, 2, 3]

    def displacement(self, u: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """[B, H, W, 2] smooth displacements in normalised coordinates, up to `elastic` of the image (±2·elastic
        in [-1, 1] units) per axis, from 2·G² uniforms per image interpolated bicubically over the image."""
        coarse = (2 * u - 1).view(-1, 2, ELASTIC_GRID, ELASTIC_GRID) * (2 * self.elastic)
        fine = F.interpolate(coarse, size=tuple(size), mode="bicubic", align_corners=True)  # [B, 2, H, W]
        return fine.permute(0, 2, 3, 1)

    def stroke_width(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Thicker (t > 0) or thinner (t < 0) strokes: a blend of x and its 3x3 dilation or erosion, t ∈ ±thickness."""
        t = ((2 * u - 1) * self.thickness).view(-1, 1, 1, 1)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        return torch.where(t > 0, x + t * (dilated - x), x - t * (eroded - x))

    def colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        brightness, contrast, saturation = self.jitter
        if brightness:
            x = (x * _factor(brightness, u[:, 0])).clamp_(0, 1)
        if contrast:
            mean = TF.rgb_to_grayscale(x).mean((1, 2, 3), keepdim=True) if x.shape[1] == 3 else x.mean((1, 2, 3), True)
            f = _factor(contrast, u[:, 1])
            x = (f * x + (1 - f) * mean).clamp_(0, 1)
        if saturation and x.shape[1] == 3:
            f = _factor(saturation, u[:, 2])
            x = (f * x + (1 - f) * TF.rgb_to_grayscale(x)).clamp_(0, 1)
        return x


def _lerp(bounds: tuple[float, float], u: torch.Tensor) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _factor(strength: float, u: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, 1] factors uniform in [1 - strength, 1 + strength]."""
    return (1 - strength + 2 * strength * u).view(-1, 1, 1, 1)


def _matrix(*entries: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] homogeneous matrices from the six entries of their first two rows (row-major)."""
    top = torch.stack(entries, dim=1).view(-1, 2, 3)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=top.dtype, device=top.device).expand(top.shape[0], 1, 3)
    return torch.cat([top, bottom], dim=1)


def build_augment(cfg: Any) -> Augment | None:
    """The training-episode augmentation of `dataset.augment`, or None when it is off."""
    return Augment(cfg) if cfg.enabled else None


class Normalize:
    """(x - mean) / std per channel, with the statistics of the training split's pixels in [0, 1]."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)  # [C, 1, 1]

    @staticmethod
    def of(split: ImageSet, chunk: int = 4096) -> Normalize:
        """Per-channel mean and std over all pixels of `split`, accumulated in float64 chunk by chunk."""
        total = torch.zeros(2, split.images.shape[1], dtype=torch.float64, device=split.images.device)
        for part in split.images.split(chunk):
            x = part.float().div_(255.0)
            total += torch.stack([x.sum((0, 2, 3)), x.square().sum((0, 2, 3))]).double()
        n = split.images.shape[0] * split.images.shape[2] * split.images.shape[3]
        mean = total[0] / n
        std = (total[1] / n - mean.square()).clamp(min=1e-12).sqrt()
        return Normalize(mean.float(), std.float().clamp(min=1e-3))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
