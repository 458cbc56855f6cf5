"""SVHN, Street View House Numbers (Netzer et al. 2011), a cross-domain test set (`eval.dataset=svhn`):
torchvision's `<root>/{test,train,extra}_32x32.mat` (`split`, default `test`: 26,032 images), read by
`torchvision.datasets.SVHN`; 10 classes "0".."9"."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torchvision.datasets import SVHN

from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.common import by_class, require_root, resize
from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError

DIGITS = [str(d) for d in range(10)]


class SvhnSplit(Enum):
    train = "train"
    test = "test"
    extra = "extra"


@dataclass
class SvhnConfig(DatasetConfig):
    name: str = "svhn"
    root: str | None = None  # dir holding torchvision's test_32x32.mat (train_32x32.mat, extra_32x32.mat)
    image_size: int = 32  # as a test set: the training set's size and channels
    split: SvhnSplit = SvhnSplit.test  # which .mat file
    download: bool = False


class _SVHN(SVHN):
    """torchvision's reader, checking that the file exists instead of its md5 (downloads use torchvision's
    class, which checks it)."""

    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}


@dataset("svhn", SvhnConfig, test_only=True)
def load_svhn(cfg: Any) -> ImageSet:
    root = require_root(cfg.root, "svhn", cfg.download)
    split = cfg.split.value if hasattr(cfg.split, "value") else str(cfg.split)
    filename = SVHN.split_list[split][1]
    if not cfg.download and not (root / filename).is_file():
        raise UserError(f"SVHN file {root / filename} not found: put torchvision's {filename} there")
    try:
        if cfg.download:
            SVHN(str(root), split=split, download=True)
        data = _SVHN(str(root), split=split)
    except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError) as e:
        raise UserError(f"cannot read SVHN file {root / filename} ({e}): download it again") from None
    images = resize(torch.from_numpy(data.data), cfg.image_size)  # [N, 3, 32, 32] uint8
    per_class = by_class(images, torch.from_numpy(data.labels.astype("int64")), DIGITS)
    return ImageSet.from_class_lists(list(per_class.values()), list(per_class))
