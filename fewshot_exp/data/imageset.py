"""A labelled image set held as one uint8 tensor, and the train/val/test splits of a dataset.

Every dataset loader returns `Splits`; each split is an `ImageSet` whose images are sorted by
class, so the images of class `c` are `images[offsets[c] : offsets[c] + counts[c]]`. Pixels are
uint8 in [0, 255] with the *foreground bright* (strokes 255 on a 0 background for characters),
so datasets can be mixed (train on glyphs, test on Omniglot) without any per-dataset inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    images: torch.Tensor  # [N, C, H, W] uint8, sorted by label
    labels: torch.Tensor  # [N] int64 in 0..n_classes-1, non-decreasing
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 [N, C, H, W] tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be [N] with one label per image")
        if self.labels.numel() and bool((self.labels[1:] < self.labels[:-1]).any()):
            raise ValueError("images must be sorted by label")
        counts = torch.bincount(self.labels, minlength=len(self.class_names))
        if counts.numel() != len(self.class_names) or bool((counts == 0).any()):
            raise ValueError("every class name needs at least one image and every label a class name")
        self.counts = counts  # [n_classes]
        self.offsets = torch.cumsum(counts, 0) - counts  # [n_classes] index of each class's first image

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def min_per_class(self) -> int:
        return int(self.counts.min())

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.class_names)

    @staticmethod
    def from_class_lists(per_class: list[torch.Tensor], class_names: list[str]) -> ImageSet:
        """Build from one [n_i, C, H, W] uint8 tensor per class."""
        labels = torch.cat([torch.full((len(x),), i, dtype=torch.long) for i, x in enumerate(per_class)])
        return ImageSet(torch.cat(per_class), labels, list(class_names))


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))
