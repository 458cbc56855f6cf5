"""Dataset loaders by `dataset.name`; each takes the `dataset` config node and returns `Splits`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError


def lazy(module: str, function: str) -> Callable[[Any], Splits]:
    """A loader imported on first call (each dataset module pulls in its own dependencies)."""

    def load(cfg: Any) -> Splits:
        return getattr(importlib.import_module(f"fewshot_exp.data.{module}"), function)(cfg)

    return load


DATASETS: dict[str, Callable[[Any], Splits]] = {
    "glyphs": lazy("glyphs", "load_glyphs"),
    "omniglot": lazy("omniglot", "load_omniglot"),
    "cifar_fs": lazy("cifar", "load_cifar_fs"),
    "fc100": lazy("cifar", "load_fc100"),
    "cifar100_random": lazy("cifar", "load_cifar100_random"),
    "miniimagenet": lazy("miniimagenet", "load_miniimagenet"),
    "folder": lazy("folder", "load_folder"),
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
