"""CIFAR-100 few-shot benchmarks: CIFAR-FS, FC100 and a random class split.

All three read torchvision's CIFAR-100 files as distributed (`<root>/cifar-100-python/{train,test,meta}`,
the python pickles of https://www.cs.toronto.edu/~kriz/cifar.html) through
`torchvision.datasets.CIFAR100`, pool its train and test images (600 per class) and split the 100
classes:

- `cifar_fs` (Bertinetto et al. 2019): 64/16/20 classes, the lists in `splits/cifar_fs.json`;
- `fc100` (Oreshkin et al. 2018): by superclass, 12/4/4 superclasses = 60/20/20 classes, the lists
  in `splits/fc100.json`, so no superclass is shared between splits;
- `cifar100_random`: `dataset.split_classes` (80/10/10) classes drawn by `dataset.split_seed`.

Images are 32 px RGB (resized when `dataset.image_size` differs). Reading takes about a second.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR100

from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.augment import AugmentConfig, natural_images
from fewshot_exp.data.common import by_class, random_class_split, require_root, resize, split_by_class, split_lists
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError
from fewshot_exp.memory import check_images_fit

SOURCE = "CIFAR-100"


@dataclass
class CifarFSConfig(DatasetConfig):
    """CIFAR-100 split by class (Bertinetto et al. 2019), from torchvision's CIFAR-100 files."""

    name: str = "cifar_fs"
    root: str | None = None  # dir holding torchvision's cifar-100-python/{train,test,meta}
    image_size: int = 32
    normalize: bool = True
    augment: AugmentConfig = field(default_factory=natural_images)
    download: bool = False  # true: fetch the files through torchvision (online only)


@dataclass
class FC100Config(CifarFSConfig):
    """CIFAR-100 split by superclass (Oreshkin et al. 2018)."""

    name: str = "fc100"


@dataclass
class Cifar100RandomConfig(CifarFSConfig):
    """CIFAR-100 classes split at random."""

    name: str = "cifar100_random"
    split_seed: int = 0
    split_classes: list[int] = field(default_factory=lambda: [80, 10, 10])  # train/val/test classes (sum 100)


FOLDER = CIFAR100.base_folder  # "cifar-100-python"
FILES = ("train", "test", "meta")
IMAGES = 60_000  # 600 of each of the 100 classes, in the train and test files together


class _CIFAR100(CIFAR100):
    """torchvision's reader, checking that the files exist instead of their md5 (a second per run; a corrupt
    file fails to unpickle anyway). Downloads use torchvision's class, which checks the md5."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def read_cifar100(cfg: Any) -> dict[str, torch.Tensor]:
    """{fine class name: [600, 3, S, S] uint8} from the train and test files."""
    root = require_root(cfg.root, "cifar-100", cfg.download)
    if not cfg.download:
        for name in FILES:
            if not (root / FOLDER / name).is_file():
                raise UserError(
                    f"CIFAR-100 file {root / FOLDER / name} not found: dataset.root must hold torchvision's "
                    f"{FOLDER}/ folder (or set dataset.download=true)"
                )
    check_images_fit(IMAGES, 3, cfg.image_size, f"dataset.image_size={cfg.image_size}")  # before unpickling
    try:
        if cfg.download:
            CIFAR100(str(root), download=True)
        parts = [_CIFAR100(str(root), train=train) for train in (True, False)]
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError, RuntimeError) as e:
        raise UserError(f"cannot read the CIFAR-100 files in {root / FOLDER} ({e}): download them again") from None
    images = torch.from_numpy(np.concatenate([p.data for p in parts]))  # [N, 32, 32, 3] uint8
    labels = torch.tensor([t for p in parts for t in p.targets])
    images = resize(images.permute(0, 3, 1, 2).contiguous(), cfg.image_size)
    return by_class(images, labels, parts[0].classes)


@dataset("cifar_fs", CifarFSConfig, source=SOURCE)
def load_cifar_fs(cfg: Any) -> Splits:
    return split_by_class(read_cifar100(cfg), split_lists("cifar_fs"), "CIFAR-100")


@dataset("fc100", FC100Config, source=SOURCE)
def load_fc100(cfg: Any) -> Splits:
    superclasses = split_lists("fc100")  # {split: {superclass: [classes]}}
    classes = {split: [c for members in groups.values() for c in members] for split, groups in superclasses.items()}
    return split_by_class(read_cifar100(cfg), classes, "CIFAR-100")


@dataset("cifar100_random", Cifar100RandomConfig, source=SOURCE)
def load_cifar100_random(cfg: Any) -> Splits:
    counts = list(cfg.split_classes)
    if len(counts) != 3 or min(counts) < 1 or sum(counts) != 100:
        raise UserError(
            f"dataset.split_classes must be three positive class counts (train, val, test) summing to 100, got {counts}"
        )
    per_class = read_cifar100(cfg)
    return split_by_class(per_class, random_class_split(sorted(per_class), counts, cfg.split_seed), "CIFAR-100")
