"""Datasets by `dataset.name`. A dataset module registers its config dataclass and its loader in one step:

    @dataset("npy", NpyConfig)
    def load_npy(cfg) -> Splits: ...

which adds the option `dataset=npy` (its defaults are the dataclass's) and the loader, which takes the `dataset`
config node and returns `Splits`. A test-only set (`test_only=True`) returns one `ImageSet` of test classes and is
used through `eval.dataset=<name>` (fewshot_exp/data/crossdomain.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import MISSING

from fewshot_exp import plugins
from fewshot_exp.data.augment import AugmentConfig
from fewshot_exp.data.imageset import ImageSet, Splits
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str | None = None
    image_size: int = 28
    normalize: bool = False  # subtract the training split's per-channel mean and divide by its std
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training episodes (and eval.tta's views)


#: name -> loader of a dataset with training classes
DATASETS: dict[str, Callable[[Any], Splits]] = {}
#: name -> loader of a cross-domain test set (eval.dataset=<name>), which has no training classes
TEST_SETS: dict[str, Callable[[Any], ImageSet]] = {}
#: name -> the images it is cut from, where datasets share them (testing one on another tests on training classes)
SOURCES: dict[str, str] = {}

F = TypeVar("F", bound=Callable[[Any], Any])


def dataset(name: str, schema: type, *, test_only: bool = False, source: str | None = None) -> Callable[[F], F]:
    """Decorator of a loader: the option `dataset=<name>` with the config dataclass `schema`, loaded by it."""

    def store(load: F) -> F:
        register("dataset", name)(schema)
        (TEST_SETS if test_only else DATASETS)[name] = load
        if source is not None:
            SOURCES[name] = source
        return load

    return store


def load_dataset(cfg: Any) -> Splits:
    """The splits of the `dataset` node `cfg` (the built-in datasets registered first, for a caller outside the
    CLI)."""
    plugins.load()
    if cfg.name in TEST_SETS:
        raise UserError(
            f"dataset={cfg.name} is a cross-domain test set with no training classes: train on another dataset "
            f"and test on it with eval.dataset={cfg.name}"
        )
    return DATASETS[cfg.name](cfg)
