"""`folder`: your own images, one subfolder per class (`<root>/<class>/*.png|jpg|jpeg`), split by class.

The split is either by fractions of the classes, `dataset.split: [train, val, test]` (summing to 1;
classes drawn by `dataset.split_seed`), or by lists, `dataset.split_files: {train: a.txt, val: b.txt,
test: c.txt}`, each naming one class (subfolder) per line (blank lines and `#` comments skipped;
paths relative to `root`). Images are converted to `dataset.channels` (1: grey, 3: RGB) and resized
to `dataset.image_size` square (antialiased bilinear; the aspect ratio is not kept). Pixels are used
as they are: the character datasets have bright strokes on black, so invert dark-on-light drawings
first if you mix them with those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.augment import AugmentConfig, natural_images
from fewshot_exp.data.common import SPLIT_NAMES, decode_images, random_class_split, require_root, split_by_class
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class SplitFiles:
    """Text files naming the classes of each split, one per line (relative to dataset.root, or absolute).
    All None: not used (a node, not an optional one, so that the command line can set it or one of its keys)."""

    train: str | None = None
    val: str | None = None
    test: str | None = None


@dataclass
class FolderConfig(DatasetConfig):
    """A directory of class folders, <root>/<class>/*.png|jpg, split by class."""

    name: str = "folder"
    root: str | None = None  # the folder holding one subfolder per class
    image_size: int = 84
    channels: int = 3  # 1 = grey, 3 = RGB
    normalize: bool = True
    augment: AugmentConfig = field(default_factory=natural_images)
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # class fractions train/val/test
    split_seed: int = 0
    split_files: SplitFiles = field(default_factory=SplitFiles)  # lists of classes; replace `split` when set


@dataset("folder", FolderConfig)
def load_folder(cfg: Any) -> Splits:
    if cfg.channels not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3, got {cfg.channels}")
    ratios = _ratios(cfg.split)
    listed = _lists_given(cfg.split_files)
    root = require_root(cfg.root, "your/images")
    classes = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        raise UserError(f"no class folders with images (<class>/*.png or *.jpg) in {root}")
    split = _listed_split(root, cfg.split_files) if listed else _ratio_split(classes, ratios, cfg)
    for s in SPLIT_NAMES:
        unknown = [c for c in split[s] if c not in classes]
        if unknown:
            raise UserError(f"the {s} split file names class {unknown[0]!r}, which has no image folder in {root}")
    mode = "L" if cfg.channels == 1 else "RGB"
    used = {c for s in SPLIT_NAMES for c in split[s]}
    per_class = {c: decode_images(classes[c], mode, cfg.image_size) for c in sorted(used)}
    return split_by_class(per_class, split, str(root))


def _ratios(split: Any) -> list[float]:
    ratios = [float(r) for r in split]
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise UserError(f"dataset.split must be three class fractions (train, val, test) summing to 1, got {ratios}")
    return ratios


def _ratio_split(classes: dict[str, list[Path]], ratios: list[float], cfg: Any) -> dict[str, list[str]]:
    n = len(classes)
    val, test = round(ratios[1] * n), round(ratios[2] * n)
    counts = [n - val - test, val, test]
    if min(counts) < 1:
        raise UserError(
            f"dataset.split={ratios} of the {n} classes in {cfg.root} leaves a split with no class "
            f"(train/val/test: {counts}); add classes or change the fractions"
        )
    return random_class_split(sorted(classes), counts, cfg.split_seed)


def _lists_given(files: Any) -> bool:
    """Whether `dataset.split_files` is used: all three lists, or none (a UserError names the missing ones)."""
    missing = [s for s in SPLIT_NAMES if files[s] is None]
    if missing and len(missing) < len(SPLIT_NAMES):
        raise UserError(f"dataset.split_files needs train, val and test lists; {', '.join(missing)} not set")
    return not missing


def _listed_split(root: Path, files: Any) -> dict[str, list[str]]:
    split = {}
    for s in SPLIT_NAMES:
        path = Path(files[s]).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise UserError(f"dataset.split_files.{s}: {path} not found")
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        split[s] = [line for line in lines if line]
        if not split[s]:
            raise UserError(f"dataset.split_files.{s}: {path} names no class")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = set(split[a]) & set(split[b])
        if shared:
            raise UserError(f"class {sorted(shared)[0]!r} is in both the {a} and {b} split files")
    return split
