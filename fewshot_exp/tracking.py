"""Metrics go to `metrics.jsonl` in the run dir, and to Weights & Biases when a logger is on.

W&B runs online when the user is logged in and offline otherwise (`logger.mode` overrides).
A W&B failure (import, init, log, finish) is reported once as a warning and never stops the run:
the local `metrics.jsonl` and `results.json` are always written.
"""

from __future__ import annotations

import json
import netrc
import os
import warnings
from pathlib import Path
from typing import Any


def logged_in_to_wandb() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if logged_in_to_wandb() else "offline"


class Tracker:
    def __init__(self, run_dir: Path, logger_cfg: Any | None = None, name: str | None = None,
                 group: str | None = None, config: dict | None = None, tags: list[str] | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_file = open(self.run_dir / "metrics.jsonl", "a")
        self.wandb_run = None
        if logger_cfg is not None and logger_cfg.name == "wandb" and logger_cfg.mode.value != "disabled":
            self._guard("init", self._init_wandb, logger_cfg, name, group, config, tags)

    def _init_wandb(self, logger_cfg: Any, name: str | None, group: str | None, config: dict | None,
                    tags: list[str] | None) -> None:
        import wandb

        self.wandb_run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            mode=wandb_mode(logger_cfg.mode.value),
            dir=str(self.run_dir),
            name=name,
            group=group,
            tags=tags,
            config=config,
            reinit="finish_previous",
        )

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # W&B must never crash or lose a run
            warnings.warn(f"W&B {what} failed, continuing with local metrics only: {type(e).__name__}: {e}", stacklevel=2)
            self.wandb_run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.metrics_file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.metrics_file.flush()
        if self.wandb_run is not None:
            self._guard("log", self.wandb_run.log, metrics, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self._guard("summary", self.wandb_run.summary.update, metrics)

    def finish(self, exit_code: int = 0) -> None:
        self.metrics_file.close()
        if self.wandb_run is not None:
            self._guard("finish", self.wandb_run.finish, exit_code)
