"""Structured-config schemas: every YAML in conf/ is validated against one of these dataclasses.

Types and enum choices are checked by OmegaConf when the config is composed (so
`episode.k_shot=abc` or `device=gpu` fails before any work); ranges and cross-field rules are
checked by `validate` right after.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, OmegaConf

from fewshot_exp import plugins
from fewshot_exp.checkpoint import checkpoint_path
from fewshot_exp.errors import UserError


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Background(Enum):
    full = "full"
    small1 = "small1"
    small2 = "small2"


class LoggerMode(Enum):
    auto = "auto"  # online when logged in to W&B, offline otherwise
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class AugmentConfig:
    """Random augmentation of training episodes (fewshot_exp/data/augment.py); the identity where unset."""

    enabled: bool = False
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random resized crop: area fraction
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # ... and aspect ratio range
    flip: bool = False  # horizontal flip with probability 1/2
    brightness: float = 0.0  # colour jitter: factors drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    rotate: float = 0.0  # small affine: rotation in [-rotate, rotate] degrees
    translate: float = 0.0  # ... shift up to this fraction of the image size
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # ... zoom range
    shear: float = 0.0  # ... horizontal shear in [-shear, shear] degrees
    elastic: float = 0.0  # elastic distortion: smooth displacements up to this fraction of the image
    thickness: float = 0.0  # stroke thickness: blend in [-t, t] towards a 3x3 erosion (-) or dilation (+)


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str | None = None
    image_size: int = 28
    normalize: bool = False  # subtract the training split's per-channel mean and divide by its std
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class AlphabetDatasetConfig(DatasetConfig):
    """Character datasets split by alphabet (glyphs, omniglot)."""

    val_alphabets: int = 2  # background alphabets held out for validation (hyperparameters, best checkpoint)
    rotation_classes: bool = False  # add 90/180/270-degree rotations of training classes as new classes


@dataclass
class GlyphsConfig(AlphabetDatasetConfig):
    name: str = "glyphs"
    renderings: int = 50  # images per character: k_shot + n_query up to 50 (35 shots with 15 queries)
    generator_seed: int = 0  # the dataset is a pure function of its settings


@dataclass
class OmniglotConfig(AlphabetDatasetConfig):
    name: str = "omniglot"
    background: Background = Background.full
    rotation_classes: bool = True
    download: bool = False


@dataclass
class CifarFSConfig(DatasetConfig):
    """CIFAR-100 split by class (Bertinetto et al. 2019), from torchvision's CIFAR-100 files."""

    name: str = "cifar_fs"
    image_size: int = 32
    normalize: bool = True
    download: bool = False


@dataclass
class FC100Config(CifarFSConfig):
    """CIFAR-100 split by superclass (Oreshkin et al. 2018)."""

    name: str = "fc100"


@dataclass
class Cifar100RandomConfig(CifarFSConfig):
    """CIFAR-100 classes split at random."""

    name: str = "cifar100_random"
    split_seed: int = 0
    split_classes: list[int] = field(default_factory=lambda: [80, 10, 10])  # train/val/test classes


@dataclass
class MiniImageNetConfig(DatasetConfig):
    """mini-ImageNet, Ravi & Larochelle split, from the pickled cache or images + CSVs."""

    name: str = "miniimagenet"
    image_size: int = 84
    normalize: bool = True


@dataclass
class SplitFiles:
    """Text files naming the classes of each split, one per line (relative to dataset.root, or absolute).
    All None: not used (a node, not an optional one, so that the command line can set it or one of its keys)."""

    train: str | None = None
    val: str | None = None
    test: str | None = None


@dataclass
class FolderConfig(DatasetConfig):
    """A directory of class folders, split by class."""

    name: str = "folder"
    channels: int = 3
    normalize: bool = True
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # class fractions train/val/test
    split_seed: int = 0
    split_files: SplitFiles = field(default_factory=SplitFiles)  # lists of classes; replace `split` when set


class SvhnSplit(Enum):
    train = "train"
    test = "test"
    extra = "extra"


@dataclass
class SvhnConfig(DatasetConfig):
    """SVHN digits, a cross-domain test set (eval.dataset=svhn)."""

    name: str = "svhn"
    image_size: int = 32
    split: SvhnSplit = SvhnSplit.test  # which .mat file
    download: bool = False


@dataclass
class DigitsConfig(DatasetConfig):
    """scikit-learn's bundled 8x8 digits, a cross-domain test set (eval.dataset=digits)."""

    name: str = "digits"


@dataclass
class EncoderConfig:
    _target_: str = MISSING


class Downsample(Enum):
    maxpool = "maxpool"  # conv3x3 - BN - ReLU - 2x2 max-pool (Vinyals et al., Snell et al.)
    stride = "stride"  # stride-2 conv3x3 - BN - ReLU, maps averaged at the end (Finn et al.'s Omniglot network)


@dataclass
class Conv4Config(EncoderConfig):
    _target_: str = "fewshot_exp.encoders.Conv4"
    hidden: int = 64
    out_channels: int = 64
    channels_last: bool = True
    fuse_norm_pool: bool = True  # training on CPU: BN + max-pool + ReLU as one function (fewshot_exp/norm_pool.py)
    downsample: Downsample = Downsample.maxpool
    pooled_blocks: int | None = None  # blocks (from the first) that end in a max-pool; None = all 4


@dataclass
class ResNet12Config(EncoderConfig):
    _target_: str = "fewshot_exp.resnet12.ResNet12"
    channels: list[int] = field(default_factory=lambda: [64, 160, 320, 640])  # widths of the 4 residual blocks
    drop_block: bool = False  # dropout after blocks 1-2, DropBlock after blocks 3-4 (MetaOptNet), training only
    drop_rate: float = 0.1  # fraction of units dropped (only with drop_block)
    block_size: int = 5  # DropBlock square side, capped at the feature map size
    channels_last: bool = True


@dataclass
class TorchvisionConfig(EncoderConfig):
    _target_: str = "fewshot_exp.torchvision_backbone.TorchvisionBackbone"
    name: str = "resnet18"  # a torchvision classification model
    out_dim: int | None = None  # a linear projection to this size; None = the penultimate features
    weights: str | None = None  # local state-dict file of that model (nothing is downloaded)
    normalize: bool | None = None  # ImageNet mean/std on the input; None = when weights is set
    image_size: int = 84  # to check that the model can embed the run's images (YAML: ${dataset.image_size})
    channels_last: bool = True


@dataclass
class AdamConfig:
    """The outer optimizer, built as `<_target_>(params, lr=train.lr, weight_decay=train.weight_decay, **rest)`."""

    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    momentum: float = 0.9
    nesterov: bool = True


@dataclass
class StepSchedulerConfig:
    """The learning-rate schedule, built as `<_target_>(optimizer, **rest)` and stepped once per training episode."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = II("train.lr_step")
    gamma: float = II("train.lr_gamma")


@dataclass
class CosineSchedulerConfig:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = II("train.episodes")  # noqa: N815  (torch's argument name)
    eta_min: float = 0.0


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


@dataclass
class TrainEpisodeShape:
    """Training episodes; each unset field takes the test episode's value."""

    n_way: int | None = None
    k_shot: int | None = None
    n_query: int | None = None
    tasks: int | None = None


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
    # a run dir or .pt whose encoder weights this run starts from (fewshot_exp/pretrained.py)
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
    dataset: str | None = None  # a cross-domain test set (conf/dataset/<name>.yaml), all its classes; None = dataset's
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


# The schema each YAML of a group names in its defaults list as `base_<name>`.
SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "glyphs": GlyphsConfig,
        "omniglot": OmniglotConfig,
        "cifar_fs": CifarFSConfig,
        "fc100": FC100Config,
        "cifar100_random": Cifar100RandomConfig,
        "miniimagenet": MiniImageNetConfig,
        "folder": FolderConfig,
        "svhn": SvhnConfig,
        "digits": DigitsConfig,
    },
    "encoder": {"conv4": Conv4Config, "resnet12": ResNet12Config, "torchvision": TorchvisionConfig},
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig},
    "scheduler": {"step": StepSchedulerConfig, "cosine": CosineSchedulerConfig, "none": ConstantSchedulerConfig},
    "logger": {"logger": LoggerConfig},
}


def register_configs() -> None:
    """The top-level schema, the schemas of `SCHEMAS` as `base_<name>`, and the plugins that register their own
    (`fewshot_exp.plugins.load`)."""
    plugins.load()
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"base_{name}", node=node)


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


def override_key(override: str) -> str:
    """The key a command-line override sets: `a.b=1`, `+a.b=1` and `~a.b` all set `a.b`."""
    return override.partition("=")[0].lstrip("+~")


def saved_overrides(run_dir: Path, given: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """A run's own command-line overrides (`<run_dir>/.hydra/overrides.yaml`; [] without it), less Hydra's own and
    those whose key is set again by the `given` overrides or is in `skip`."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    except Exception as e:  # a file cut short or edited by hand: YAML's own error types
        raise UserError(
            f"{path} is unreadable ({type(e).__name__}): it is not the list of overrides Hydra wrote"
        ) from None
    if not isinstance(saved, list):
        raise UserError(f"{path} is not the list of overrides Hydra wrote")
    dropped = {override_key(o) for o in given} | set(skip)
    return [str(o) for o in saved or [] if not str(o).startswith("hydra") and override_key(str(o)) not in dropped]


def _positive(name: str, value: Any) -> None:
    if value is None or not 0 < value < math.inf:  # the comparison is False for nan, so nan is refused too
        raise UserError(f"{name} must be positive{' and finite' if value == math.inf else ''}, got {value}")


# Conv-4 and ResNet-12 halve the map in each of their 4 blocks: below 16 px the last block has no pixel left.
MIN_IMAGE_SIZE = {"fewshot_exp.encoders.Conv4": ("conv4", 16), "fewshot_exp.resnet12.ResNet12": ("resnet12", 16)}


def validate_encoder(cfg: Any) -> None:
    """Widths and the smallest input the chosen encoder can take."""
    enc = cfg.encoder
    widths = [(f"encoder.{k}", enc[k]) for k in ("hidden", "out_channels") if k in enc]
    widths += [(f"encoder.channels[{i}]", c) for i, c in enumerate(enc.get("channels") or [])]
    for name, value in widths:
        _positive(name, value)
    pooled = enc.get("pooled_blocks")
    if pooled is not None and (not 0 <= pooled <= 4 or enc.get("downsample") == Downsample.stride):
        raise UserError(
            f"encoder.pooled_blocks={pooled} must be in 0..4 or null (= all 4), with encoder.downsample=maxpool "
            "(a strided Conv-4 downsamples in every block)"
        )
    name, need = MIN_IMAGE_SIZE.get(enc._target_, (None, 0))
    if cfg.dataset.image_size < need:
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
    if cfg.eval.dataset is not None and cfg.eval.dataset not in SCHEMAS["dataset"]:
        raise UserError(f"eval.dataset={cfg.eval.dataset} is not one of {', '.join(SCHEMAS['dataset'])}")
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
