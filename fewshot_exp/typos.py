"""Misspelled keys and group options: refused before any work, with the nearest valid names.

Every node of the config is a structured-config dataclass (fewshot_exp/config.py), closed to new keys. Hydra
refuses `episode.kshot=5` itself; `+episode.kshot=5` it adds, so `unknown_keys` looks for keys that no schema
declares once the config is composed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fewshot_exp import config, plugins
from fewshot_exp.errors import UserError

# Hydra's and OmegaConf's messages, as `one_line` joins them
NOT_IN_SCHEMA = re.compile(r"Key '[^']+' not in '(\w+)'; full_key: (\S+)")
NO_OPTION = re.compile(r"Could not find '([\w/]+)/([^']+)'; Available options in '[\w/]+': (.+)")


def nearest(word: str, candidates: list[str]) -> list[str]:
    """The candidates closest to `word`: the best match (difflib's ratio, at least 0.75) and any that tie with it.
    Where none is close, the same for the last part of the dotted key against the candidates' last parts."""
    for key, cutoff in ((lambda c: c, 0.75), (lambda c: c.rpartition(".")[2], 0.7)):
        scores = {c: difflib.SequenceMatcher(None, key(word), key(c)).ratio() for c in candidates if "._" not in c}
        best = max(scores.values(), default=0.0)
        if best >= cutoff:
            return [c for c, s in sorted(scores.items(), key=lambda cs: -cs[1]) if s >= best - 0.02][:3]
    return []


def did_you_mean(names: list[str]) -> str:
    return f"; did you mean {' or '.join(names)}?" if names else ""


def schema_fields(node: Any) -> list[str] | None:
    """The keys the schema of a DictConfig node declares, or None where the node has no dataclass schema."""
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None


def config_keys(cfg: DictConfig, prefix: str = "") -> tuple[list[str], list[str]]:
    """(declared, undeclared) dotted keys of a composed config, leaving Hydra's own node out."""
    declared, undeclared = [], []
    fields = schema_fields(cfg)
    for key in cfg.keys():
        if key == "hydra" and not prefix:
            continue
        full = f"{prefix}{key}"
        (declared if fields is None or key in fields else undeclared).append(full)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            below = config_keys(child, f"{full}.")
            declared += below[0]
            undeclared += below[1]
    return declared, undeclared


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys no schema declares (added with `+key=value`), naming the nearest declared keys."""
    declared, undeclared = config_keys(cfg)
    if undeclared:
        key = undeclared[0]
        raise UserError(f"unknown key {key}{did_you_mean(nearest(key, declared))}")


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Dotted keys a dataclass schema declares, nested dataclasses included."""
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(f"{prefix}{f.name}")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += schema_keys(type(default), f"{prefix}{f.name}.")
    return keys


def schema_named(name: str) -> type | None:
    """The dataclass schema of that class name: one of `fewshot_exp.config` or a registered plugin's."""
    registered = {schema.__name__: schema for group in plugins.SCHEMAS.values() for schema in group.values()}
    found = registered.get(name, getattr(config, name, None))
    return found if dataclasses.is_dataclass(found) else None


def explain(message: str) -> str:
    """Hydra's one-line message with the nearest valid key or group option added."""
    missing = NOT_IN_SCHEMA.search(message)
    if missing:
        schema, key = schema_named(missing.group(1)), missing.group(2)
        parent = key.rpartition(".")[0]
        siblings = schema_keys(schema, f"{parent}." if parent else "") if schema else []
        return f"unknown key {key}{did_you_mean(nearest(key, siblings))}"
    option = NO_OPTION.search(message)
    if option:
        group, choice, options = option.groups()
        names = [o.strip() for o in options.split(",")]
        return (
            f"{group}={choice} is not an option of {group}{did_you_mean(nearest(choice, names))} "
            f"(options: {', '.join(names)})"
        )
    return message
