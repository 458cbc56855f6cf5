"""Dataset loaders by `dataset.name`; each takes the `dataset` config node and returns `Splits`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError


def _glyphs(cfg: Any) -> Splits:
    from fewshot_exp.data.glyphs import load_glyphs

    return load_glyphs(cfg)


def _omniglot(cfg: Any) -> Splits:
    from fewshot_exp.data.omniglot import load_omniglot

    return load_omniglot(cfg)


def _cifar_fs(cfg: Any) -> Splits:
    from fewshot_exp.data.cifar import load_cifar_fs

    return load_cifar_fs(cfg)


def _fc100(cfg: Any) -> Splits:
    from fewshot_exp.data.cifar import load_fc100

    return load_fc100(cfg)


def _cifar100_random(cfg: Any) -> Splits:
    from fewshot_exp.data.cifar import load_cifar100_random

    return load_cifar100_random(cfg)


def _miniimagenet(cfg: Any) -> Splits:
    from fewshot_exp.data.miniimagenet import load_miniimagenet

    return load_miniimagenet(cfg)


def _folder(cfg: Any) -> Splits:
    from fewshot_exp.data.folder import load_folder

    return load_folder(cfg)


DATASETS: dict[str, Callable[[Any], Splits]] = {
    "glyphs": _glyphs,
    "omniglot": _omniglot,
    "cifar_fs": _cifar_fs,
    "fc100": _fc100,
    "cifar100_random": _cifar100_random,
    "miniimagenet": _miniimagenet,
    "folder": _folder,
}
TEST_ONLY = ("svhn", "digits")  # cross-domain test sets (fewshot_exp/data/crossdomain.py): eval.dataset=<name>


def load_dataset(cfg: Any) -> Splits:
    """The splits of the `dataset` node `cfg`."""
    if cfg.name in TEST_ONLY:
        raise UserError(
            f"dataset={cfg.name} is a cross-domain test set with no training classes: train on another dataset "
            f"and test on it with eval.dataset={cfg.name}"
        )
    return DATASETS[cfg.name](cfg)
