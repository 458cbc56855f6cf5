"""scikit-learn's bundled `load_digits` (UCI optical digits, 1,797 images of 8x8 px with 17 grey levels), a
cross-domain test set (`eval.dataset=digits`): bright strokes on black like the character datasets, upscaled;
10 classes "0".."9". No files needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.common import by_class, resize
from fewshot_exp.data.imageset import ImageSet

DIGITS = [str(d) for d in range(10)]


@dataclass
class DigitsConfig(DatasetConfig):
    name: str = "digits"
    root: str | None = None  # not used: the images ship with scikit-learn
    image_size: int = 28  # as a test set: the training set's size and channels


@dataset("digits", DigitsConfig, test_only=True)
def load_digits(cfg: Any) -> ImageSet:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    pixels = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8)  # [1797, 8, 8], 0..16 -> 0..255
    images = resize(pixels.unsqueeze(1), cfg.image_size)
    per_class = by_class(images, torch.from_numpy(digits.target).long(), DIGITS)
    return ImageSet.from_class_lists(list(per_class.values()), list(per_class))
