"""From a composed config to the objects of an experiment: device, data splits, samplers, model."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import get_class, instantiate

from fewshot_exp.algorithms.base import FewShotAlgorithm
from fewshot_exp.algorithms.ensemble import Ensemble
from fewshot_exp.algorithms.maml import check_embedding_dim
from fewshot_exp.config import EvalConfig, train_shape
from fewshot_exp.data import load_dataset
from fewshot_exp.data.augment import Augment, Normalize, build_augment
from fewshot_exp.data.episodes import EpisodeSampler, batch_bytes, check_shape
from fewshot_exp.data.imageset import Splits
from fewshot_exp.distances import Distance
from fewshot_exp.errors import UserError
from fewshot_exp.memory import device_memory
from fewshot_exp.tta import Views


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is available; use device=auto or device=cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_splits(cfg: Any, device: torch.device) -> Splits:
    """The dataset's splits on the device; with `eval.dataset` the test split is that set's classes."""
    splits = load_dataset(cfg.dataset)
    if cfg.eval.dataset is not None:
        from fewshot_exp.data.crossdomain import cross_domain_test

        splits = Splits(splits.train, splits.val, cross_domain_test(cfg, splits.train))
    check_episode_shapes(cfg, splits)
    return splits.to(device)


def check_episode_shapes(cfg: Any, splits: Splits) -> None:
    """Fail before training if any split cannot fill its episodes."""
    t, e = train_shape(cfg), cfg.episode
    own = cfg.train.episode.k_shot is not None or cfg.train.episode.n_query is not None
    check_shape(splits.train, "train", t.n_way, t.k_shot, t.n_query, "train.episode" if own else "episode")
    check_shape(splits.val, "validation", e.n_way, e.k_shot, e.n_query)
    check_shape(splits.test, "test", e.n_way, e.k_shot, e.n_query)


def check_batch_memory(cfg: Any, splits: Splits) -> None:
    """Fail before training if one training batch's images alone exceed the device's memory (evaluation
    batches are cut to `eval.batch_images`). A lower bound: activations need many times more."""
    t = train_shape(cfg)
    need = batch_bytes(splits.train, t.n_way, t.k_shot, t.n_query, t.tasks)
    have = device_memory(splits.train.images.device)
    if need > have:
        key = "episode.tasks" if cfg.train.episode.tasks is None else "train.episode.tasks"
        c, h, w = splits.train.images.shape[1:]
        raise UserError(
            f"{key}={t.tasks} needs {need / 2**30:.1f} GiB for one training batch's images alone ({t.tasks} tasks "
            f"x {t.n_way} classes x {t.k_shot}+{t.n_query} images of {c}x{h}x{w} floats), more than the "
            f"{have / 2**30:.1f} GiB of {splits.train.images.device.type} memory; lower {key}"
        )


#: The offset of each sampler's generator seed. Training episodes follow the run's `seed`; validation, test and
#: visualised episodes follow `eval.seed`, so that runs differing in `seed`, algorithm or anything else that leaves
#: the data and the episode shape alone are validated and tested on the same episodes.
SEED_OFFSETS = {"train": 0, "val": 1, "test": 2, "viz": 3, "tta": 4}


def episode_seed(cfg: Any, split: str) -> int:
    """The generator seed of `split`'s episodes (`SEED_OFFSETS`); a config saved without `eval.seed` has its
    default."""
    base = cfg.seed if split == "train" else cfg.eval.get("seed", EvalConfig.seed)
    return base + SEED_OFFSETS[split]


def tta_views(cfg: Any) -> Views | None:
    """The test-time views of `eval.tta` (drawn with the `dataset.augment` settings), or None when it is 0."""
    views = cfg.eval.get("tta", EvalConfig.tta)
    if views == 0:
        return None
    augment = Augment(cfg.dataset.augment)
    if views < 0 or augment.identity:
        raise UserError(
            f"eval.tta={views} needs a positive number of views and dataset.augment settings that change an image "
            "(for example dataset.augment.rotate=10)"
        )
    return Views(augment, views, episode_seed(cfg, "tta"))


def samplers(cfg: Any, splits: Splits) -> dict[str, EpisodeSampler]:
    """Train, validation and test samplers with independent generators (`episode_seed`). The training generator
    is on the data's device; the validation and test generators are CPU generators, so these episodes are the same
    on every device. Training episodes are augmented (`dataset.augment`); all are normalised with the training
    split's statistics (`dataset.normalize`)."""
    device = splits.train.images.device
    t, e = train_shape(cfg), cfg.episode
    norm = Normalize.of(splits.train) if cfg.dataset.normalize else None
    augment = build_augment(cfg.dataset.augment)
    train_gen = torch.Generator(device=device).manual_seed(episode_seed(cfg, "train"))
    val_gen = torch.Generator().manual_seed(episode_seed(cfg, "val"))
    test_gen = torch.Generator().manual_seed(episode_seed(cfg, "test"))
    return {
        "train": EpisodeSampler(
            splits.train,
            t.n_way,
            t.k_shot,
            t.n_query,
            t.tasks,
            train_gen,
            "train",
            augment,
            norm,
            cfg.train.episode.get("within_alphabet", False),
        ),  # fmt: skip
        "val": EpisodeSampler(splits.val, e.n_way, e.k_shot, e.n_query, e.tasks, val_gen, "validation", None, norm),
        "test": EpisodeSampler(splits.test, e.n_way, e.k_shot, e.n_query, e.tasks, test_gen, "test", None, norm),
    }


def distance_overrides(overrides: list[str]) -> list[str]:
    """The overrides among `overrides` that set the `distance` group or one of its keys."""
    keys = [o.lstrip("+~").partition("=")[0] for o in overrides]
    return [o for o, key in zip(overrides, keys) if key == "distance" or key.startswith("distance.")]


def check_distance_used(cfg: Any, overrides: list[str]) -> None:
    """A UserError when the command sets the distance (`overrides`) for an algorithm that does not use one: the
    setting would change nothing (and a sweep over it would run the same job several times)."""
    given = distance_overrides(overrides)
    algorithm = get_class(cfg.algorithm._target_)
    if given and not algorithm.uses_distance(cfg.algorithm):
        raise UserError(
            f"{' '.join(given)}: {algorithm.__name__} does not use the distance group, so it would change nothing; "
            "drop it (algorithms that use one: protonet, hallucination, matching with algorithm.similarity=distance, "
            "siamese with algorithm.loss=contrastive)"
        )


def build_algorithm(cfg: Any, in_channels: int, device: torch.device) -> FewShotAlgorithm:
    """The algorithm of `cfg.algorithm` on `cfg.encoder` and `cfg.distance`; with `algorithm.members=M` > 1, an
    `Ensemble` of M of them, each initialised with the next draws of torch's generator."""
    node = {k: v for k, v in cfg.algorithm.items() if k != "members"}
    members = []
    for _ in range(cfg.algorithm.get("members", 1)):
        encoder = instantiate(cfg.encoder, in_channels=in_channels)
        distance = Distance(cfg.distance.name, cfg.distance.temperature, cfg.distance.learn_temperature)
        members.append(instantiate(node, encoder=encoder, distance=distance))
    check_embedding_dim(members[0].encoder, cfg.dataset.image_size, cfg.algorithm.get("embedding_dim"))
    algorithm = members[0] if len(members) == 1 else Ensemble(members)
    return algorithm.to(device)
