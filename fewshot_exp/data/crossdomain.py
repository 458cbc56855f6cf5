"""Cross-domain test sets: train on one dataset, test on the classes of another (`eval.dataset=<name>`).

`eval.dataset` names a dataset option; its settings are that option's defaults, with `root` from
`eval.dataset_root`. All classes of the named set are test classes (for a dataset with train/val/test
splits, the three are pooled), converted to the training set's channels (grey repeated to RGB, RGB
to ITU-R 601 luma) and image size, and normalised with the training split's statistics like every
other episode. The training dataset's own validation split still picks the checkpoint.

Two sets exist only for this (`TEST_SETS`): `svhn` (fewshot_exp/data/svhn.py) and `digits`
(fewshot_exp/data/digits.py).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from fewshot_exp import plugins
from fewshot_exp.data import DATASETS, SOURCES, TEST_SETS
from fewshot_exp.data.common import convert, merge
from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError


def dataset_node(name: str, root: str | None, image_size: int) -> Any:
    """The `dataset` node of the option `dataset=<name>` (its schema's defaults) with the given root and size."""
    plugins.load()
    schemas = plugins.SCHEMAS.get("dataset", {})
    if name not in schemas:
        raise UserError(f"eval.dataset={name} is not one of {', '.join(schemas)}")
    node = OmegaConf.structured(schemas[name])
    node.image_size = image_size
    if "rotation_classes" in node:  # rotated copies are extra training classes, not test classes
        node.rotation_classes = False
    if root is not None:
        node.root = root
    return node


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
    name = cfg.eval.dataset
    node = dataset_node(name, cfg.eval.dataset_root, train.images.shape[-1])
    try:
        test = TEST_SETS[name](node) if name in TEST_SETS else merge(DATASETS[name](node))
    except UserError as e:  # the loaders name dataset.root; here it is set as eval.dataset_root
        raise UserError(str(e).replace("dataset.root", "eval.dataset_root")) from None
    check_no_training_classes(cfg, train, test)
    return convert(test, train.images.shape[-1], train.images.shape[1])
