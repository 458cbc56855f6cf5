"""Cross-domain test sets: train on one dataset, test on the classes of another (`eval.dataset=<name>`).

`eval.dataset` names a YAML of conf/dataset/; its options are that file's, with `root` from
`eval.dataset_root`. All classes of the named set are test classes (for a dataset with train/val/test
splits, the three are pooled), converted to the training set's channels (grey repeated to RGB, RGB
to ITU-R 601 luma) and image size, and normalised with the training split's statistics like every
other episode. The training dataset's own validation split still picks the checkpoint.

Two sets exist only for this:

- `svhn`: Street View House Numbers (Netzer et al. 2011), torchvision's `<root>/{test,train,extra}_32x32.mat`
  (`split`, default `test`: 26,032 images), read by `torchvision.datasets.SVHN`; 10 classes "0".."9".
- `digits`: scikit-learn's bundled `load_digits` (UCI optical digits, 1,797 images of 8x8 px with 17 grey
  levels), bright strokes on black like the character datasets, upscaled; 10 classes "0".."9". No files needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torchvision.datasets import SVHN

from fewshot_exp.config import SCHEMAS
from fewshot_exp.data.common import by_class, convert, require_root, resize
from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "dataset"
DIGITS = [str(d) for d in range(10)]


class _SVHN(SVHN):
    """torchvision's reader, checking that the file exists instead of its md5 (downloads use torchvision's
    class, which checks it)."""

    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}


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


def load_digits(cfg: Any) -> ImageSet:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    pixels = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8)  # [1797, 8, 8], 0..16 -> 0..255
    images = resize(pixels.unsqueeze(1), cfg.image_size)
    per_class = by_class(images, torch.from_numpy(digits.target).long(), DIGITS)
    return ImageSet.from_class_lists(list(per_class.values()), list(per_class))


TEST_SETS = {"svhn": load_svhn, "digits": load_digits}


def dataset_node(name: str, root: str | None, image_size: int) -> Any:
    """The `dataset` node of conf/dataset/<name>.yaml (validated by its schema) with the given root and size."""
    if name not in SCHEMAS["dataset"] or not (CONF_DIR / f"{name}.yaml").is_file():
        raise UserError(f"eval.dataset={name} is not one of {', '.join(SCHEMAS['dataset'])}")
    yaml = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    yaml.pop("defaults", None)
    node = OmegaConf.merge(OmegaConf.structured(SCHEMAS["dataset"][name]), yaml)
    node.image_size = image_size
    if "rotation_classes" in node:  # rotated copies are extra training classes, not test classes
        node.rotation_classes = False
    if root is not None:
        node.root = root
    return node


#: Datasets cut from the same images: testing one on another tests on training classes.
SOURCES = {"cifar_fs": "CIFAR-100", "fc100": "CIFAR-100", "cifar100_random": "CIFAR-100"}


def check_no_training_classes(cfg: Any, train: ImageSet, test: ImageSet) -> None:
    """Refuse a test set drawn from the training dataset's own images that holds training classes (all classes
    of it are test classes, so e.g. dataset=cifar_fs eval.dataset=fc100 would test on 64 training classes)."""
    same_source = SOURCES.get(cfg.dataset.name, cfg.dataset.name) == SOURCES.get(cfg.eval.dataset, cfg.eval.dataset)
    if cfg.eval.dataset == "folder":  # a folder is its own source only at the same root
        same_source = same_source and cfg.eval.dataset_root in (None, cfg.dataset.get("root"))
    shared = sorted(set(train.class_names) & set(test.class_names))
    if same_source and shared:
        raise UserError(
            f"eval.dataset={cfg.eval.dataset} holds {len(shared)} of the training split's classes (e.g. "
            f"{shared[0]!r}), from the same images as dataset={cfg.dataset.name}: test on another dataset"
        )


def cross_domain_test(cfg: Any, train: ImageSet) -> ImageSet:
    """All classes of `eval.dataset`, at the training images' size and channels."""
    from fewshot_exp.data import DATASETS
    from fewshot_exp.data.common import merge

    name = cfg.eval.dataset
    node = dataset_node(name, cfg.eval.dataset_root, train.images.shape[-1])
    try:
        test = TEST_SETS[name](node) if name in TEST_SETS else merge(DATASETS[name](node))
    except UserError as e:  # the loaders name dataset.root; here it is set as eval.dataset_root
        raise UserError(str(e).replace("dataset.root", "eval.dataset_root")) from None
    check_no_training_classes(cfg, train, test)
    return convert(test, train.images.shape[-1], train.images.shape[1])
