"""Hydra plugins that are optional extras of the package, checked before Hydra composes the config.

`pip install fewshot-exp` has no launcher or sweeper plugin; `pip install "fewshot-exp[slurm]"`, `[parallel]`,
`[optuna]` or `[all]` adds them. Choosing one that is not installed is a one-line error naming its extra
(Hydra alone would say that a config group option does not exist).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from fewshot_exp.errors import UserError

# extra -> the plugin package it installs
PLUGINS = {
    "parallel": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "optuna": "hydra_plugins.hydra_optuna_sweeper",
}
# (group, option) -> the extra it needs; every hparams_search preset runs the Optuna sweeper
NEEDS = {
    ("hydra/launcher", "parallel"): "parallel",
    ("hydra/launcher", "joblib"): "parallel",
    ("hydra/launcher", "slurm"): "slurm",
    ("hydra/launcher", "slurm_local"): "slurm",
    ("hydra/launcher", "submitit_slurm"): "slurm",
    ("hydra/launcher", "submitit_local"): "slurm",
    ("hydra/sweeper", "optuna"): "optuna",
    ("hparams_search", "*"): "optuna",
}


def installed(extra: str) -> bool:
    return importlib.util.find_spec(PLUGINS[extra]) is not None


def check_extras(overrides: Iterable[str]) -> None:
    """Refuse a launcher, sweeper or search whose plugin is not installed, naming the extra to install."""
    for override in overrides:
        group, _, option = override.lstrip("+~").partition("=")
        extra = NEEDS.get((group, option)) or NEEDS.get((group, "*"))
        if extra is not None and option and option != "null" and not installed(extra):
            raise UserError(
                f"{group}={option} needs Hydra's {PLUGINS[extra].rpartition('.')[2].replace('_', '-')} plugin, "
                f'which is not installed: pip install "fewshot-exp[{extra}]"'
            )
