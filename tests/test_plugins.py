"""Plugins register where they are defined: a user's algorithm outside the package (a module on PYTHONPATH named in
FEWSHOT_EXP_PLUGINS, a preset YAML in their --config-dir) runs like a built-in one, with its keys checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli
from omegaconf import OmegaConf

from fewshot_exp import plugins
from fewshot_exp.config import register_configs

TOY_MODULE = """
from dataclasses import dataclass

from fewshot_exp.algorithms.base import AlgorithmConfig, FewShotAlgorithm, class_means
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
"""
TINY = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "eval.episodes=4", "logger=none"]


@pytest.fixture
def user_plugin(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment, config dir) of a user's plugin module and a preset of it, outside the package."""
    (tmp_path / "toy_plugins.py").write_text(TOY_MODULE)
    conf = tmp_path / "conf" / "algorithm"
    conf.mkdir(parents=True)
    (conf / "scaled_protonet_x2.yaml").write_text("defaults:\n  - base_scaled_protonet\n  - _self_\n\nscale: 2.0\n")
    return {"PYTHONPATH": str(tmp_path), plugins.ENV: "toy_plugins"}, tmp_path / "conf"


def test_a_users_algorithm_and_its_preset_run_without_touching_the_package(user_plugin, glyphs_root, tmp_path):
    env, conf = user_plugin
    run = tmp_path / "run"
    common = [*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={run}"]
    proc = run_cli("--config-dir", str(conf), "algorithm=scaled_protonet_x2", *common, env=env, fresh=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.algorithm == {"_target_": "toy_plugins.ScaledProtoNet", "scale": 2.0}
    assert 0 <= json.loads((run / "results.json").read_text())["test/acc"] <= 1
    # the registered option itself needs no YAML, and its keys are checked like a built-in's
    typo = run_cli("algorithm=scaled_protonet", "algorithm.scal=3", *common, env=env, fresh=True)
    assert typo.returncode != 0 and "Traceback" not in typo.stderr
    assert "did you mean algorithm.scale?" in typo.stderr


def test_a_plugin_module_that_cannot_be_imported_is_one_line(glyphs_root, tmp_path):
    proc = run_cli("logger=none", f"hydra.run.dir={tmp_path}", env={plugins.ENV: "no_such_module"}, fresh=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {plugins.ENV}=no_such_module: cannot import no_such_module") and "PYTHONPATH" in last
    )


def yaml_values(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of a YAML mapping (the defaults list left out)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    found: dict[str, object] = {}
    for key, value in node.items():
        if key != "defaults":
            found |= yaml_values(value, f"{prefix}{key}.")
    return found


def test_no_algorithm_preset_repeats_a_default_of_its_schema():
    """A YAML of conf/algorithm holds only what its preset changes; the defaults are written once, in the
    plugin's dataclass."""
    register_configs()
    repeated = []
    for path in sorted((REPO / "fewshot_exp" / "conf" / "algorithm").glob("*.yaml")):
        text = yaml.safe_load(path.read_text())
        schema_name = next(d for d in text["defaults"] if isinstance(d, str) and d.startswith("base_"))[5:]
        defaults = {f.name: f.default for f in dataclasses.fields(plugins.SCHEMAS["algorithm"][schema_name])}
        for key, value in yaml_values(text).items():
            default = getattr(defaults.get(key), "value", defaults.get(key))
            if key in defaults and default == value:
                repeated.append(f"{path.name}: {key}: {value}")
    assert not repeated, repeated
    assert set(plugins.SCHEMAS["algorithm"]) <= set(plugins.options("algorithm"))
    assert {"l2", "cosine", "dot"} <= set(plugins.options("distance"))
