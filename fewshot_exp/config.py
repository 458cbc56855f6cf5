"""The top-level config's schema, the options of the groups that have no plugin module (optimizer, scheduler,
logger, episode), and the checks that span groups. Algorithms, datasets, encoders and distances register their
own schemas where they are defined (fewshot_exp/plugins.py).

Types and enum choices are checked by OmegaConf when the config is composed (so
`episode.k_shot=abc` or `device=gpu` fails before any work); ranges and cross-field rules are
checked by `validate` right after.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import II, MISSING

from fewshot_exp import plugins
from fewshot_exp.checkpoint import checkpoint_path
from fewshot_exp.errors import UserError


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class LoggerMode(Enum):
    auto = "auto"  # online when logged in to W&B, offline otherwise
    online = "online"
    offline = "offline"
    disabled = "disabled"


@plugins.register("optimizer", "adam")
@dataclass
class AdamConfig:
    """The outer optimizer, built as `<_target_>(params, lr=train.lr, weight_decay=train.weight_decay, **rest)`."""

    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@plugins.register("optimizer", "sgd")
@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    momentum: float = 0.9
    nesterov: bool = True


@plugins.register("scheduler", "step")
@dataclass
class StepSchedulerConfig:
    """The learning-rate schedule, built as `<_target_>(optimizer, **rest)` and stepped once per training episode."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = II("train.lr_step")
    gamma: float = II("train.lr_gamma")


@plugins.register("scheduler", "cosine")
@dataclass
class CosineSchedulerConfig:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = II("train.episodes")  # noqa: N815  (torch's argument name)
    eta_min: float = 0.0


@plugins.register("scheduler", "none")
@dataclass
class ConstantSchedulerConfig:
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    _partial_: bool = True
    factor: float = 1.0
    total_iters: int = 0


@dataclass
class EpisodeShape:
    n_way: int = 5
    k_shot: int = 5
    n_query: int = 15
    tasks: int = 1  # tasks per meta-batch


# the options `episode=<n>way_<k>shot`
for _n_way, _k_shot in ((5, 1), (5, 5), (20, 1), (20, 5)):
    plugins.register_option("episode", f"{_n_way}way_{_k_shot}shot", EpisodeShape(n_way=_n_way, k_shot=_k_shot))


@dataclass
class TrainEpisodeShape:
    """Training episodes; each unset field takes the test episode's value."""

    n_way: int | None = None
    k_shot: int | None = None
    n_query: int | None = None
    tasks: int | None = None
    within_alphabet: bool = False  # all classes of an episode from one alphabet, as in Omniglot's one-shot runs


class Projection(Enum):
    pca = "pca"
    tsne = "tsne"  # needs scikit-learn


@dataclass
class TrainConfig:
    episodes: int = 2000
    lr: float = 1e-3  # the optimizer's learning rate (at the schedule's start)
    lr_step: int = 1000  # episodes between learning-rate decays (scheduler=step)
    lr_gamma: float = 0.5  # the factor of each decay (scheduler=step)
    weight_decay: float = 0.0
    episode: TrainEpisodeShape = field(default_factory=TrainEpisodeShape)
    log_every: int = 50
    val_every: int = 500
    val_episodes: int = 200
    checkpoint_every: int = 250  # episodes between `last.pt` writes (also written on SIGTERM/SIGINT)
    amp: bool = False  # bf16 autocast of the training forward (CUDA or CPU)
    # a run dir or .pt whose encoder weights this run starts from (fewshot_exp/encoders/pretrained.py)
    init_from: str | None = None


@dataclass
class EvalConfig:
    episodes: int = 1000
    seed: int = 0  # seeds the validation and test episodes (fewshot_exp/build.py: SEED_OFFSETS), apart from `seed`
    # images per forward pass when evaluating many episodes at once; None: 4096 on CUDA, 128 on CPU, where activations
    # past cache (and glibc's 32 MB mmap threshold) make bigger forwards slower per image (fewshot_exp/evaluate.py)
    batch_images: int | None = None
    lake_runs: str | None = None  # dir of Omniglot one-shot runs (run01..run20) to report test/lake_error
    tta: int = 0  # test-time augmentation: random views of every test image with dataset.augment (fewshot_exp/tta.py)
    dataset: str | None = None  # a cross-domain test set (a dataset option), all its classes; None = dataset's
    dataset_root: str | None = None  # its dataset.root
    k_shots: list[int] | None = None  # eval_only: the k_shot of each point of the test-shot curve; None = episode's
    n_ways: list[int] | None = None  # eval_only: the n_way values; None = episode's


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | none
    project: str = "fewshot-exp"
    entity: str | None = None
    mode: LoggerMode = LoggerMode.auto
    group: str | None = None  # default: the sweep dir for multiruns, the experiment name otherwise
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 20.0  # seconds an online run may take to start before the run goes on offline


plugins.register_schema("logger", "logger", LoggerConfig)
plugins.register_option("logger", "wandb", LoggerConfig(name="wandb"))
plugins.register_option("logger", "none", LoggerConfig(name="none", mode=LoggerMode.disabled))


@dataclass
class Config:
    dataset: Any = MISSING
    encoder: Any = MISSING
    algorithm: Any = MISSING
    distance: Any = MISSING
    episode: EpisodeShape = field(default_factory=EpisodeShape)
    logger: LoggerConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment_name: str = "default"
    seed: int = 0
    device: Device = Device.auto
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN flags (for GPU runs)
    resume: bool = False  # continue from last.pt in the run dir (`resume=<run dir>` picks the dir)
    eval_only: bool = False  # evaluate `checkpoint` at eval.n_ways x eval.k_shots, no training (shot_curve.py)
    checkpoint: str | None = None  # a .pt file or a run dir (its best.pt), for eval_only
    viz: bool = False  # at the end: embedding plot and episode gallery (PNG in the run dir and W&B), see viz.py
    viz_projection: Projection = Projection.pca  # 2-D projection of the embedding plot


def register_configs() -> None:
    """The top-level schema and the plugins, which register their own (`fewshot_exp.plugins.load`)."""
    plugins.load()
    ConfigStore.instance().store(name="base_config", node=Config)


def train_shape(cfg: Any) -> EpisodeShape:
    """The training episode shape: `train.episode.*` where set, else the test `episode.*`."""
    t = cfg.train.episode
    e = cfg.episode
    return EpisodeShape(
        n_way=e.n_way if t.n_way is None else t.n_way,
        k_shot=e.k_shot if t.k_shot is None else t.k_shot,
        n_query=e.n_query if t.n_query is None else t.n_query,
        tasks=e.tasks if t.tasks is None else t.tasks,
    )


CLASS_PATHS = frozenset({"_target_", "_partial_"})


def flat(values: dict, prefix: str = "", skip: frozenset[str] = CLASS_PATHS) -> dict:
    """Nested dicts as one level, keys joined by dots (`{"episode": {"k_shot": 5}}` -> `{"episode.k_shot": 5}`);
    the keys in `skip` (by default the class paths `_target_`, `_partial_`) are left out, lists kept as values."""
    out = {}
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}.", skip))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _positive(name: str, value: Any) -> None:
    if value is None or not 0 < value < math.inf:  # the comparison is False for nan, so nan is refused too
        raise UserError(f"{name} must be positive{' and finite' if value == math.inf else ''}, got {value}")


def validate_encoder(cfg: Any) -> None:
    """Widths, and what the encoder's class says of its config (`check_config`) and of its input
    (`min_image_size`)."""
    enc = cfg.encoder
    widths = [(f"encoder.{k}", enc[k]) for k in ("hidden", "out_channels") if k in enc]
    widths += [(f"encoder.channels[{i}]", c) for i, c in enumerate(enc.get("channels") or [])]
    for name, value in widths:
        _positive(name, value)
    encoder = get_class(enc._target_)
    if hasattr(encoder, "check_config"):
        encoder.check_config(cfg)
    need = getattr(encoder, "min_image_size", 0)
    if cfg.dataset.image_size < need:
        options = plugins.SCHEMAS.get("encoder", {}).items()
        name = next((n for n, schema in options if schema._target_ == enc._target_), enc._target_)
        raise UserError(
            f"dataset.image_size={cfg.dataset.image_size} is too small for encoder={name}: "
            f"its 4 blocks halve the image 4 times; use dataset.image_size >= {need}"
        )


def head_outputs(cfg: Any) -> int | None:
    """Rows of a learned head (maml, fomaml, reptile): max(n_way, train_n_way); None for algorithms without one."""
    if cfg.algorithm.get("n_way") is None:
        return None
    return max(cfg.algorithm.n_way, cfg.algorithm.get("train_n_way") or 0)


MAX_SEED = 2**32 - 1  # the seeds of torch, NumPy and Python all take it, with the samplers' offsets added


def validate(cfg: Any) -> None:
    """Range and consistency checks that types alone cannot express; raises UserError."""
    for prefix, shape in (("episode", cfg.episode), ("train.episode", train_shape(cfg))):
        for key in ("n_way", "k_shot", "n_query", "tasks"):
            _positive(f"{prefix}.{key}", getattr(shape, key))
    if cfg.episode.n_way < 2 or train_shape(cfg).n_way < 2:
        raise UserError("n_way must be at least 2 (a 1-way task has nothing to classify)")
    for key in ("episodes", "log_every", "val_every", "val_episodes", "lr_step", "checkpoint_every"):
        _positive(f"train.{key}", cfg.train[key])
    for key in ("lr", "lr_gamma"):
        _positive(f"train.{key}", cfg.train[key])
    if not 0 <= cfg.train.weight_decay < math.inf:  # False for nan too
        raise UserError(f"train.weight_decay must be >= 0 and finite, got {cfg.train.weight_decay}")
    for key, seed in (("seed", cfg.seed), ("eval.seed", cfg.eval.get("seed", 0))):
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"{key} must be between 0 and {MAX_SEED} (2**32 - 1), got {seed}")
    if cfg.train.get("init_from") and not cfg.get("resume"):  # a resumed run starts from its last.pt instead
        checkpoint_path(cfg.train.init_from, "train.init_from")
    members = cfg.algorithm.get("members", 1)
    _positive("algorithm.members", members)
    if members > 1 and cfg.train.get("init_from"):
        raise UserError(
            f"train.init_from with algorithm.members={members} would start every member from the same encoder, "
            "which leaves the ensemble nothing to average; drop one of them"
        )
    _positive("eval.episodes", cfg.eval.episodes)
    if cfg.eval.batch_images is not None:
        _positive("eval.batch_images", cfg.eval.batch_images)
    _positive("dataset.image_size", cfg.dataset.image_size)
    validate_encoder(cfg)
    if cfg.algorithm.get("image_size", cfg.dataset.image_size) != cfg.dataset.image_size:
        raise UserError(
            f"algorithm.image_size={cfg.algorithm.image_size} differs from dataset.image_size="
            f"{cfg.dataset.image_size}; leave it at its default, ${{dataset.image_size}}"
        )
    if cfg.get("checkpoint") and not cfg.get("eval_only"):
        raise UserError(
            f"checkpoint={cfg.checkpoint} is read only by eval_only=true: add eval_only=true to evaluate it, or use "
            "train.init_from to start training from its weights"
        )
    if (cfg.eval.k_shots is not None or cfg.eval.n_ways is not None) and not cfg.get("eval_only"):
        raise UserError("eval.k_shots and eval.n_ways make a test-shot curve of a trained model: add eval_only=true")
    if cfg.eval.dataset_root is not None and cfg.eval.dataset is None:
        raise UserError("eval.dataset_root is set but eval.dataset is not: name the cross-domain test set")
    datasets = plugins.SCHEMAS.get("dataset", {})
    if cfg.eval.dataset is not None and cfg.eval.dataset not in datasets:
        raise UserError(f"eval.dataset={cfg.eval.dataset} is not one of {', '.join(datasets)}")
    if cfg.dataset.get("val_alphabets", 1) < 1:
        raise UserError(f"dataset.val_alphabets must be at least 1, got {cfg.dataset.val_alphabets}")
    from fewshot_exp.distances import SIMILARITIES

    if cfg.distance.name not in SIMILARITIES:
        raise UserError(f"distance.name must be one of {', '.join(SIMILARITIES)}, got {cfg.distance.name!r}")
    _positive("distance.temperature", cfg.distance.temperature)
    _positive("logger.init_timeout", cfg.logger.get("init_timeout", LoggerConfig.init_timeout))
    if cfg.viz and cfg.viz_projection == Projection.tsne and importlib.util.find_spec("sklearn") is None:
        raise UserError("viz_projection=tsne needs scikit-learn: pip install scikit-learn (or use viz_projection=pca)")
    outputs = head_outputs(cfg)
    if outputs is not None:  # a learned head (maml, fomaml, reptile) needs a row per class
        need = max(cfg.episode.n_way, train_shape(cfg).n_way, 20 if cfg.eval.lake_runs else 0)
        if outputs < need:
            raise UserError(
                f"algorithm.n_way={cfg.algorithm.n_way} gives the head fewer outputs than the {need} "
                f"classes of the largest episode (20 for eval.lake_runs); set algorithm.n_way={need}"
            )
