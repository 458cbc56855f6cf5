"""Every option of every config group composes and passes validation; bad values fail with a UserError."""

from __future__ import annotations

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, get_object
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from fewshot_exp import plugins
from fewshot_exp.config import register_configs, train_shape, validate
from fewshot_exp.errors import UserError

GROUPS = ["dataset", "encoder", "algorithm", "distance", "episode", "logger", "experiment"]
register_configs()
OPTIONS = [(g, option) for g in GROUPS for option in plugins.options(g)]
NEEDS_ROOT = {"omniglot"}


def make(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "fewshot_exp" / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in NEEDS_ROOT:
        overrides.append("dataset.root=/some/dir")
    cfg = make(*overrides)
    validate(cfg)
    for node in (cfg.encoder, cfg.algorithm):  # every _target_ names a real class
        assert isinstance(get_object(node._target_), type)


def test_training_shape_defaults_to_test_shape_and_can_differ():
    cfg = make("episode.n_way=20", "episode.k_shot=1")
    assert (train_shape(cfg).n_way, train_shape(cfg).k_shot) == (20, 1)
    cfg = make("episode.n_way=5", "train.episode.n_way=60", "train.episode.n_query=5")
    shape = train_shape(cfg)
    assert (shape.n_way, shape.k_shot, shape.n_query, cfg.episode.n_way) == (60, 5, 5, 5)


@pytest.mark.parametrize(
    "override,match",
    [
        ("episode.k_shot=0", "episode.k_shot must be positive"),
        ("episode.n_way=1", "n_way must be at least 2"),
        ("train.episode.n_query=-3", "train.episode.n_query must be positive"),
        ("train.lr=0", "train.lr must be positive"),
        ("eval.episodes=0", "eval.episodes must be positive"),
        ("distance.temperature=-1", "distance.temperature must be positive"),
        ("dataset.val_alphabets=0", "dataset.val_alphabets must be at least 1"),
    ],
)
def test_out_of_range_values(override, match):
    with pytest.raises(UserError, match=match):
        validate(make(override))


@pytest.mark.parametrize("override", ["episode.k_shot=abc", "device=gpu", "train.lr=fast", "logger.mode=sometimes"])
def test_wrong_types_and_choices_fail_at_composition(override):
    with pytest.raises((ValidationError, ConfigCompositionException)):
        make(override)


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        make("episode.k_shots=5")


def test_run_names_leave_out_paths_and_logger_settings():
    """A job dir is `<n>_<override_dirname>`: a path's `/` would nest it (and hide it from sweep_summary.json)."""
    paths = ["train.init_from=/runs/a", "encoder.weights=/w/r18.pt", "dataset.root=/data/x", "checkpoint=/runs/b"]
    logger = ["logger.project=p", "logger.group=g", "logger.tags=[a,b]", "seed=3", "device=cpu"]
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "fewshot_exp" / "conf"), version_base="1.3"):
        overrides = ["encoder=torchvision", "episode.k_shot=1", *paths, *logger]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == "encoder=torchvision,episode.k_shot=1"


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset.split_files={train: a.txt, val: b.txt, test: c.txt}"],
        ["dataset.split_files.train=a.txt", "dataset.split_files.val=b.txt", "dataset.split_files.test=c.txt"],
    ],
)
def test_folder_split_files_can_be_set_on_the_command_line(overrides):
    """A dict (or one key at a time) merges into the schema's SplitFiles node (a node of Nones, not None, which
    would not merge)."""
    cfg = make("dataset=folder", "dataset.root=/x", *overrides)
    assert dict(cfg.dataset.split_files) == {"train": "a.txt", "val": "b.txt", "test": "c.txt"}


def test_a_checkpoint_from_before_a_key_existed_resumes_while_that_key_is_at_its_default():
    """Resume compares configs key by key; a key the saved config lacks (one a newer schema has, here
    encoder.downsample) differs only if this run sets it away from the schema's default."""
    from fewshot_exp.resume import config_differences

    cfg = make()
    older = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    del older["encoder"]["downsample"]
    assert config_differences(cfg, OmegaConf.to_yaml(older)) == []
    assert config_differences(make("encoder.downsample=stride"), OmegaConf.to_yaml(older)) == ["encoder.downsample"]
    assert config_differences(make("train.lr=0.5"), OmegaConf.to_yaml(older)) == ["train.lr"]


@pytest.mark.parametrize(
    "option, old_path",
    [("conv4", "fewshot_exp.encoders.Conv4"), ("resnet12", "fewshot_exp.resnet12.ResNet12"),
     ("torchvision", "fewshot_exp.torchvision_backbone.TorchvisionBackbone")],
)  # fmt: skip
def test_a_checkpoint_naming_an_encoder_by_its_earlier_class_path_resumes(option, old_path):
    """Checkpoints written before the encoders became a package name their class by the old module path; resume
    reads it as the class it is now, and still refuses another encoder."""
    from fewshot_exp.resume import config_differences

    cfg = make(f"encoder={option}")
    older = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    older["encoder"]["_target_"] = old_path
    assert get_class(cfg.encoder._target_).__module__.startswith("fewshot_exp.encoders.")
    assert config_differences(cfg, OmegaConf.to_yaml(older)) == []
    other = "resnet12" if option == "conv4" else "conv4"
    assert "encoder._target_" in config_differences(make(f"encoder={other}"), OmegaConf.to_yaml(older))
