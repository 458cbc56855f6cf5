"""Splitting character datasets (Omniglot, glyphs) by alphabet, and rotation classes.

Both character datasets come as alphabets of characters, each character a few images. Classes
never cross splits: background alphabets give training and (held-out alphabets) validation
classes, evaluation alphabets give test classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fewshot_exp.data import DatasetConfig
from fewshot_exp.data.augment import AugmentConfig, characters
from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError


@dataclass
class AlphabetDatasetConfig(DatasetConfig):
    """Character datasets split by alphabet (glyphs, omniglot)."""

    val_alphabets: int = 2  # background alphabets held out for validation (hyperparameters, best checkpoint)
    rotation_classes: bool = False  # add 90/180/270-degree rotations of training classes as new classes
    augment: AugmentConfig = field(default_factory=characters)


Alphabet = list[tuple[str, torch.Tensor]]  # (character name, [n, C, H, W] uint8 images)


def to_imageset(alphabets: dict[str, Alphabet]) -> ImageSet:
    """All characters of the given alphabets as classes named 'alphabet/character'."""
    names, images = [], []
    for alphabet in sorted(alphabets):
        for char, x in alphabets[alphabet]:
            names.append(f"{alphabet}/{char}")
            images.append(x)
    return ImageSet.from_class_lists(images, names)


def with_rotations(s: ImageSet, angles: tuple[int, ...] = (90, 180, 270)) -> ImageSet:
    """Add each class rotated by each angle as a new class (Snell et al. 2017, after Santoro et al.)."""
    per_class, names = [], []
    for c in range(s.n_classes):
        x = s.images[int(s.offsets[c]) : int(s.offsets[c] + s.counts[c])]
        for angle in (0, *angles):
            per_class.append(torch.rot90(x, k=angle // 90, dims=(2, 3)))
            names.append(s.class_names[c] if angle == 0 else f"{s.class_names[c]}@rot{angle}")
    return ImageSet.from_class_lists(per_class, names)


def background_splits(
    background: dict[str, Alphabet], val_alphabets: int, rotation_classes: bool
) -> tuple[ImageSet, ImageSet]:
    """(train, val): the last `val_alphabets` background alphabets (sorted by name) are validation."""
    names = sorted(background)
    if val_alphabets >= len(names):
        raise UserError(
            f"dataset.val_alphabets={val_alphabets} leaves no training alphabet: the background set has "
            f"{len(names)} alphabets; use a smaller value"
        )
    train = to_imageset({a: background[a] for a in names[: len(names) - val_alphabets]})
    val = to_imageset({a: background[a] for a in names[len(names) - val_alphabets :]})
    return (with_rotations(train) if rotation_classes else train), val
