"""mini-ImageNet (Vinyals et al. 2016) with the split of Ravi & Larochelle (2017): 64/16/20 classes of
600 images each, 84 px RGB.

`dataset.root` holds either form in which it is commonly distributed (the first found is used):

1. the pickled cache `mini-imagenet-cache-{train,val,test}.pkl`, each a dict with `image_data`
   (uint8 [N, 84, 84, 3]) and `class_dict` ({wnid: [indices into image_data]}); each file is one split;
2. the images folder `images/*.jpg` (file names start with the class's wnid, e.g.
   `n0153282900000005.jpg`) with Ravi's `{train,val,test}.csv` (columns `filename,label`) beside it;
   without the CSVs, the classes of each split are the wnids in `splits/miniimagenet.json` and an
   image's class is the first 9 characters of its name. Images are resized to `dataset.image_size`
   (antialiased bilinear, as `torchvision.transforms.Resize`); decoding 60,000 JPEGs takes a minute or so.

Pickles can run code when loaded: only point `dataset.root` at files you trust.
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.augment import AugmentConfig, natural_images
from fewshot_exp.data.common import SPLIT_NAMES, decode_images, require_root, resize, split_by_class, split_lists
from fewshot_exp.data.imageset import ImageSet, Splits
from fewshot_exp.errors import UserError
from fewshot_exp.memory import check_images_fit

CACHE = "mini-imagenet-cache-{}.pkl"
IMAGES = 60_000  # 600 of each of the 64 + 16 + 20 classes


@dataclass
class MiniImageNetConfig(DatasetConfig):
    """mini-ImageNet, Ravi & Larochelle split, from the pickled cache or images + CSVs."""

    name: str = "miniimagenet"
    root: str | None = None  # mini-imagenet-cache-{train,val,test}.pkl, or images/*.jpg (+ {train,val,test}.csv)
    image_size: int = 84
    normalize: bool = True
    augment: AugmentConfig = field(default_factory=natural_images)


@dataset("miniimagenet", MiniImageNetConfig)
def load_miniimagenet(cfg: Any) -> Splits:
    root = require_root(cfg.root, "mini-imagenet")
    if (root / CACHE.format("train")).is_file():
        check_images_fit(IMAGES, 3, cfg.image_size, f"dataset.image_size={cfg.image_size}")  # before unpickling
        return Splits(*(_read_cache(root / CACHE.format(s), cfg.image_size) for s in SPLIT_NAMES))
    if (root / "images").is_dir():
        return _read_folder(root, cfg.image_size)
    raise UserError(
        f"no mini-ImageNet in {root}: expected {CACHE.format('train')} (and _val, _test) or an images/ folder"
    )


def _read_cache(path: Path, image_size: int) -> ImageSet:
    if not path.is_file():
        raise UserError(f"mini-ImageNet file {path} not found: the cache needs its train, val and test files")
    try:
        with path.open("rb") as f:
            data = pickle.load(f)
        images, class_dict = np.asarray(data["image_data"]), data["class_dict"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError) as e:
        raise UserError(f"{path} is not a mini-ImageNet cache (a dict of image_data and class_dict): {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{path}: image_data must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    names = sorted(class_dict)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)  # [N, 3, H, W]
    per_class = [
        resize(x[torch.as_tensor(np.asarray(class_dict[n], dtype=np.int64))].contiguous(), image_size) for n in names
    ]
    return ImageSet.from_class_lists(per_class, names)


def _read_folder(root: Path, image_size: int) -> Splits:
    """images/*.jpg, grouped by the CSVs' labels or by wnid prefix with the shipped class lists."""
    files = {p.name: p for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not files:
        raise UserError(f"no images (*.jpg) in {root / 'images'}")
    if all((root / f"{s}.csv").is_file() for s in SPLIT_NAMES):
        members = {s: _read_csv(root / f"{s}.csv") for s in SPLIT_NAMES}
    else:
        classes = split_lists("miniimagenet")
        wanted = {c for s in SPLIT_NAMES for c in classes[s]}
        grouped: dict[str, list[str]] = {}
        for name in sorted(files):
            if name[:9] in wanted:
                grouped.setdefault(name[:9], []).append(name)
        members = {s: {c: grouped.get(c, []) for c in classes[s]} for s in SPLIT_NAMES}
    per_class: dict[str, torch.Tensor] = {}
    for split in SPLIT_NAMES:
        for wnid, names in members[split].items():
            if not names:
                raise UserError(f"mini-ImageNet class {wnid} of the {split} split has no image in {root / 'images'}")
            missing = [n for n in names if n not in files]
            if missing:
                raise UserError(f"mini-ImageNet image {root / 'images' / missing[0]} (listed in {split}.csv) not found")
            per_class[wnid] = decode_images([files[n] for n in names], "RGB", image_size)
    return split_by_class(per_class, {s: list(members[s]) for s in SPLIT_NAMES}, str(root))


def _read_csv(path: Path) -> dict[str, list[str]]:
    """{label: [filename, ...]} in file order from a `filename,label` CSV."""
    out: dict[str, list[str]] = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
            raise UserError(f"{path} must start with the header line 'filename,label', got {header}")
        for row in rows:
            if len(row) >= 2:
                out.setdefault(row[1].strip(), []).append(row[0].strip())
    return out
