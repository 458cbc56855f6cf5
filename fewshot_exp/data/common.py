"""Helpers shared by the dataset loaders: paths, shipped split lists, class splits, resizing, channels."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from fewshot_exp.data.imageset import ImageSet, Splits
from fewshot_exp.errors import UserError
from fewshot_exp.memory import check_images_fit

SPLIT_NAMES = ("train", "val", "test")


def require_root(root: str | None, dataset: str, download: bool | None = None) -> Path:
    """`dataset.root` as a readable folder (made later by the download when `download`; None: cannot download)."""
    if root is None:
        raise UserError(f"dataset.root is not set: set dataset.root=/path/to/{dataset}")
    path = Path(root).expanduser()
    if download:
        return path
    if not path.exists():
        hint = " or set dataset.download=true" if download is not None else ""
        raise UserError(f"dataset.root={path} does not exist: fix the path{hint}")
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"dataset.root={path} is not a readable folder")
    return path


def split_lists(name: str) -> dict[str, list[str]]:
    """The class lists a benchmark fixes, shipped as fewshot_exp/data/splits/<name>.json (sources inside)."""
    text = resources.files("fewshot_exp.data").joinpath("splits", f"{name}.json").read_text()
    data = json.loads(text)
    return {s: data[s] for s in SPLIT_NAMES}


def split_by_class(per_class: dict[str, torch.Tensor], classes: dict[str, Sequence[str]], source: str) -> Splits:
    """Splits from {class name: [n, C, H, W] uint8} and {split: class names}; names must all be known, and each
    class in one split once (a class in two splits would leak its images into evaluation)."""
    for split in SPLIT_NAMES:
        twice = sorted(c for c, n in Counter(classes[split]).items() if n > 1)
        if twice:
            raise UserError(f"the {split} split of {source} lists class {twice[0]!r} twice")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(classes[a]) & set(classes[b]))
        if shared:
            raise UserError(f"class {shared[0]!r} is in both the {a} and {b} splits of {source}")
    parts = []
    for split in SPLIT_NAMES:
        missing = [c for c in classes[split] if c not in per_class]
        if missing:
            raise UserError(
                f"the {split} split names class {missing[0]!r}, which {source} does not have"
                + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else "")
            )
        parts.append(ImageSet.from_class_lists([per_class[c] for c in classes[split]], list(classes[split])))
    return Splits(*parts)


def random_class_split(names: Sequence[str], counts: Sequence[int], seed: int) -> dict[str, list[str]]:
    """{split: class names}: a seeded permutation of `names` cut into `counts` (train, val, test)."""
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    cuts = np.cumsum([0, *counts])
    return {s: sorted(shuffled[cuts[i] : cuts[i + 1]]) for i, s in enumerate(SPLIT_NAMES)}


def by_class(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """{class name: its images} from [N, C, H, W] images and [N] integer labels."""
    order = torch.argsort(labels, stable=True)
    images, labels = images[order], labels[order]
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    return {name: part for name, part in zip(class_names, images.split(counts)) if len(part)}


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] uint8 resized (antialiased bilinear) to [N, C, size, size]; unchanged if already that size."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([TF.resize(part, [size, size], antialias=True) for part in images.split(4096)])


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, C, H, W] uint8 with C in {1, 3} converted to `channels` (grey repeated, or ITU-R 601 luma)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if images.shape[1] == 3 and channels == 1:
        return TF.rgb_to_grayscale(images)
    raise UserError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


def convert(s: ImageSet, image_size: int, channels: int) -> ImageSet:
    """The same images at `image_size` px with `channels` channels."""
    return ImageSet(to_channels(resize(s.images, image_size), channels), s.labels, s.class_names)


def merge(splits: Splits) -> ImageSet:
    """All classes of the three splits as one ImageSet (class names kept, labels renumbered)."""
    parts = (splits.train, splits.val, splits.test)
    offsets = np.cumsum([0, *(p.n_classes for p in parts)])
    return ImageSet(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels + int(o) for p, o in zip(parts, offsets)]),
        [name for p in parts for name in p.class_names],
    )


WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16/32-bit grey, which Pillow's convert() clips at 255


def eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (microscopy, medical scans) as 8-bit grey, scaled by 1/256 rather than clipped."""
    pixels = np.asarray(image, dtype=np.int64)  # "I" holds 16-bit values as 32-bit integers
    return Image.fromarray((np.clip(pixels, 0, 65535) >> 8).astype(np.uint8), mode="L")


def decode_images(paths: Sequence[Path], mode: str, image_size: int) -> torch.Tensor:
    """[n, C, S, S] uint8 of image files converted to PIL `mode` ("L" or "RGB") and resized to S x S
    (antialiased bilinear, as torchvision's Resize)."""
    check_images_fit(len(paths), 1 if mode == "L" else 3, image_size, f"dataset.image_size={image_size}")
    out = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert(mode) if image.mode not in WIDE_GREY else eight_bit(image).convert(mode)
                if image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.BILINEAR)
                out.append(np.asarray(image))
        except OSError as e:
            raise UserError(f"cannot decode image {path} ({e}): the file is corrupt") from None
        except Image.DecompressionBombError as e:  # Pillow's guard against images far larger than they look
            raise UserError(f"image {path} is refused by Pillow's decompression-bomb guard ({e})") from None
    x = torch.from_numpy(np.stack(out))
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
