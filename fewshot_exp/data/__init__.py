"""Dataset loaders by `dataset.name`; each takes the `dataset` config node and returns `Splits`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fewshot_exp.data.imageset import Splits


def _glyphs(cfg: Any) -> Splits:
    from fewshot_exp.data.glyphs import load_glyphs

    return load_glyphs(cfg)


def _omniglot(cfg: Any) -> Splits:
    from fewshot_exp.data.omniglot import load_omniglot

    return load_omniglot(cfg)


DATASETS: dict[str, Callable[[Any], Splits]] = {"glyphs": _glyphs, "omniglot": _omniglot}
