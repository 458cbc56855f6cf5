"""Plugins register where they are defined: a user's algorithm outside the package (a module on PYTHONPATH named in
FEWSHOT_EXP_PLUGINS, a preset YAML in their --config-dir) runs like a built-in one, with its keys checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fewshot_exp import plugins
from fewshot_exp.config import Config, flat, register_configs

TOY_MODULE = """
from dataclasses import dataclass

import torch

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm, class_means
from fewshot_exp.data import DatasetConfig, dataset
from fewshot_exp.data.imageset import ImageSet, Splits
from fewshot_exp.plugins import register


@register("algorithm", "scaled_protonet")
@dataclass
class ScaledProtoNetConfig(AlgorithmConfig):
    _target_: str = "toy_plugins.ScaledProtoNet"
    scale: float = 1.0  # logits multiplied by this


class ScaledProtoNet(FewShotAlgorithm):
    def __init__(self, encoder, distance, scale: float = 1.0):
        super().__init__(encoder, distance)
        self.scale = scale

    def forward(self, episode):
        support, query = self.embed_episode(episode)
        return self.scale * self.distance(query, class_means(support, episode.support_y, episode.n_way))


@dataclass
class BlobsConfig(DatasetConfig):
    name: str = "blobs"
    per_class: int = 30  # images of each class


@dataset("blobs", BlobsConfig)
def load_blobs(cfg):
    # 15 classes, each a bright square at its own place on noise; 5 classes per split
    generator = torch.Generator().manual_seed(0)
    size = cfg.image_size
    per_class = []
    for c in range(15):
        images = torch.randint(0, 60, (cfg.per_class, 1, size, size), generator=generator, dtype=torch.uint8)
        row, col = divmod(c, 4)
        images[:, :, 6 * row : 6 * row + 5, 6 * col : 6 * col + 5] = 255
        per_class.append(images)
    split = [ImageSet.from_class_lists(per_class[i : i + 5], [f"c{j}" for j in range(i, i + 5)]) for i in (0, 5, 10)]
    return Splits(*split)
"""
TINY = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "eval.episodes=4", "logger=none"]


@pytest.fixture
def user_plugin(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment, config dir) of a user's plugin module and a preset of it, outside the package."""
    (tmp_path / "toy_plugins.py").write_text(TOY_MODULE)
    conf = tmp_path / "conf" / "algorithm"
    conf.mkdir(parents=True)
    (conf / "scaled_protonet_x2.yaml").write_text("defaults:\n  - base_scaled_protonet\n  - _self_\n\nscale: 2.0\n")
    (tmp_path / "conf" / "dataset").mkdir()
    (tmp_path / "conf" / "dataset" / "blobs_20.yaml").write_text(
        "defaults:\n  - base_blobs\n  - _self_\n\nper_class: 20\n"
    )
    return {"PYTHONPATH": str(tmp_path), plugins.ENV: "toy_plugins"}, tmp_path / "conf"


def test_a_users_algorithm_and_dataset_and_their_presets_run_without_touching_the_package(user_plugin, tmp_path):
    env, conf = user_plugin
    run = tmp_path / "run"
    common = [*TINY, f"hydra.run.dir={run}"]
    proc = run_cli("--config-dir", str(conf), "algorithm=scaled_protonet_x2", "dataset=blobs_20", *common, env=env,
                   fresh=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    # `members` comes from the AlgorithmConfig schema the user's dataclass extends
    assert saved.algorithm == {"_target_": "toy_plugins.ScaledProtoNet", "members": 1, "scale": 2.0}
    assert saved.dataset.name == "blobs" and saved.dataset.per_class == 20 and saved.dataset.image_size == 28
    assert json.loads((run / "results.json").read_text())["test/acc"] > 0.5  # the squares tell the classes apart
    # the registered options themselves need no YAML, and their keys are checked like a built-in's
    typo = run_cli("algorithm=scaled_protonet", "dataset=blobs", "algorithm.scal=3", *common, env=env)  # a fork
    assert typo.returncode != 0 and "Traceback" not in typo.stderr
    assert "did you mean algorithm.scale?" in typo.stderr


def test_a_plugin_module_that_cannot_be_imported_is_one_line(glyphs_root, tmp_path):
    proc = run_cli("logger=none", f"hydra.run.dir={tmp_path}", env={plugins.ENV: "no_such_module"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {plugins.ENV}=no_such_module: cannot import no_such_module") and "PYTHONPATH" in last
    )


MISSING_KEY = object()


def without_the_yaml(path: Path, text: dict) -> dict:
    """What the config would hold without `path`'s own values: for an option of a group, the schema it lists
    (`base_<name>`); for a global preset (experiment, hparams_search), the default config with the group options
    it picks; for conf/config.yaml, the top-level schema."""
    conf = REPO / "fewshot_exp" / "conf"
    if path == conf / "config.yaml":
        return OmegaConf.to_container(OmegaConf.structured(Config), resolve=False, enum_to_str=True)
    schema = next((d[5:] for d in text.get("defaults", []) if isinstance(d, str) and d.startswith("base_")), None)
    if schema is not None:
        group = path.parent.relative_to(conf).as_posix()
        return OmegaConf.to_container(OmegaConf.structured(plugins.SCHEMAS[group][schema]), resolve=False,
                                      enum_to_str=True)  # fmt: skip
    picks = [f"{k.removeprefix('override /')}={v}" for d in text.get("defaults", []) if isinstance(d, dict)
             for k, v in d.items() if not k.removeprefix("override /").startswith("hydra")]  # fmt: skip
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=picks)
    return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def test_no_yaml_repeats_a_default():
    """Every YAML of conf/ holds only what it changes: a value it sets that the config would hold without it (a
    schema's default, or a preset's value equal to the default config's) is written twice."""
    register_configs()
    conf = REPO / "fewshot_exp" / "conf"
    repeated = []
    for path in sorted(p for p in conf.rglob("*.yaml") if "hydra" not in p.relative_to(conf).parts):
        text = yaml.safe_load(path.read_text()) or {}
        before = flat(without_the_yaml(path, text), skip=frozenset())
        for key, value in flat(text, skip=frozenset({"defaults", "hydra"})).items():
            if before.get(key, MISSING_KEY) == value:
                repeated.append(f"{path.relative_to(conf)}: {key}: {value}")
    assert not repeated, repeated


def test_every_registered_option_is_offered():
    register_configs()
    for group in ("algorithm", "dataset", "encoder", "distance", "optimizer", "scheduler", "logger", "episode"):
        assert plugins.options(group), group
    assert set(plugins.SCHEMAS["algorithm"]) <= set(plugins.options("algorithm"))
    assert set(plugins.SCHEMAS["dataset"]) == set(plugins.options("dataset"))
    assert {"l2", "cosine", "dot"} <= set(plugins.options("distance"))
