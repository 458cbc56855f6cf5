"""Plugins register themselves where they are defined.

An algorithm module holds its class and its config dataclass, decorated with `register("algorithm", "<name>")`.
That stores the dataclass in Hydra's ConfigStore twice: as the option `algorithm=<name>` itself, so the option
needs no YAML (its defaults are the dataclass's), and as the schema `base_<name>`, for a YAML preset that changes
some of them (`conf/algorithm/fomaml.yaml` lists `base_maml`); a preset takes a name of its own (Hydra would take
a YAML named like a stored option for that option's schema, a deprecated behaviour). An encoder's dataclass
registers the same way (`register("encoder", "<name>")`); a dataset registers with `fewshot_exp.data.dataset`,
which also records its loader; a distance with `fewshot_exp.distances.similarity`, which stores an option of the
group's shared schema (`register_option`).

`load()` imports the built-in plugin modules (`MODULES`, and every module of `PACKAGES`) and the user's own
modules named in the `FEWSHOT_EXP_PLUGINS` environment variable (comma-separated, importable from
`PYTHONPATH`), so a plugin outside the package works without touching it.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.config_store import ConfigStore

from fewshot_exp.errors import UserError

ENV = "FEWSHOT_EXP_PLUGINS"
#: the built-in modules and packages (each of their modules) that register plugins
MODULES = ("fewshot_exp.config", "fewshot_exp.distances")
PACKAGES = ("fewshot_exp.algorithms", "fewshot_exp.data", "fewshot_exp.encoders")
CONF_DIR = Path(__file__).resolve().parent / "conf"
#: group -> name -> a registered schema, stored as `<group>/base_<name>`
SCHEMAS: dict[str, dict[str, type]] = {}
#: group -> the options registered in code (a YAML of `conf/<group>` is one too)
OPTIONS: dict[str, set[str]] = {}

T = TypeVar("T", bound=type)


def register_schema(group: str, name: str, schema: type) -> None:
    """`schema` as `<group>/base_<name>`, for the group's YAMLs to list in their defaults."""
    SCHEMAS.setdefault(group, {})[name] = schema
    ConfigStore.instance().store(group=group, name=f"base_{name}", node=schema)


def register_option(group: str, name: str, node: object) -> None:
    """The option `<group>=<name>`, as `node` (a dataclass, or an instance of the group's shared schema)."""
    OPTIONS.setdefault(group, set()).add(name)
    ConfigStore.instance().store(group=group, name=name, node=node)


def register(group: str, name: str) -> Callable[[T], T]:
    """Class decorator for a plugin's config dataclass: the option `<group>=<name>` and its schema `base_<name>`."""

    def store(schema: T) -> T:
        register_schema(group, name, schema)
        register_option(group, name, schema)
        return schema

    return store


def user_modules() -> list[str]:
    return [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]


#: the user's modules that failed to import, with why; `check_loaded` reports the first
FAILED: dict[str, str] = {}


@functools.cache
def load_builtin() -> None:
    """Import the built-in plugin modules (once per process: the package's folders are listed only then)."""
    for module in MODULES:
        importlib.import_module(module)
    for package in PACKAGES:
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")


def load() -> None:
    """Import the built-in plugin modules and the user's (`FEWSHOT_EXP_PLUGINS`, read at each call, so a process
    forked with another environment finds its own). This runs when the CLI module is imported (sweep workers
    included), before any error can be shown as one line, so a user module that fails to import is recorded in
    `FAILED` for `check_loaded`."""
    load_builtin()
    for name in user_modules():
        try:
            importlib.import_module(name)
        except ImportError as e:
            FAILED[name] = str(e)


def check_loaded() -> None:
    """A UserError naming the first user module of `FEWSHOT_EXP_PLUGINS` that could not be imported."""
    for name, why in FAILED.items():
        raise UserError(f"{ENV}={os.environ.get(ENV, '')}: cannot import {name} ({why}); is it on PYTHONPATH?")


def options(group: str) -> list[str]:
    """The choices of `group` the package offers: its registered plugins and the YAML files of `conf/<group>`."""
    files = {path.stem for path in (CONF_DIR / group).glob("*.yaml")}
    return sorted(files | OPTIONS.get(group, set()))
