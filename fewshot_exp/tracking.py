"""Metrics go to `metrics.jsonl` in the run dir, and to Weights & Biases when a logger is on.

W&B runs online when the user is logged in and offline otherwise (`logger.mode` overrides). An online run first
checks that the server accepts a connection (`probe_server`, a few seconds at most): when it does not, that run
and every later run of the process go offline, with one warning. A sweep probes once, in the process that launches
it (`probe_for_sweep`), and its verdict reaches the launcher's worker processes through `UNREACHABLE_VARIABLE`.
A W&B failure (import, init, log, finish) is reported once as a warning and never stops the run:
the local `metrics.jsonl` and `results.json` are always written.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fewshot_exp.files import strict_json, write_atomically
from fewshot_exp.run_files import METRICS_FILE


def logged_in_to_wandb() -> bool:
    """W&B's own credential lookup (WANDB_API_KEY, the netrc entry of WANDB_BASE_URL's host, identity tokens),
    without prompting. With credentials found, W&B's "logged in as" message asks the server for the user name,
    within W&B's own few-second timeout (not at all under WANDB_SILENT)."""
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


PROBE_TIMEOUT = 3.0  # seconds to open a connection to the W&B server before a run goes offline
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
UNREACHABLE_VARIABLE = "FEWSHOT_WANDB_UNREACHABLE"  # set by a sweep's launching process for its local workers
# why the W&B server was found unreachable by this process or the sweep that started it (then every run is offline)
unreachable: str | None = os.environ.get(UNREACHABLE_VARIABLE)


def server_address() -> tuple[str, int]:
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def probe_server(timeout: float) -> str | None:
    """Why the W&B server cannot be reached (a TCP connection within `timeout`), None when it can. Behind a proxy
    (a *_PROXY variable) the server is not probed: W&B's own client goes through the proxy."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    host, port = server_address()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or type(e).__name__}"
    return None


def online_or_offline(timeout: float) -> str:
    """ "online", or "offline" with one warning per process when the server cannot be reached, so that an
    unreachable server costs a run at most `timeout` seconds, and a sweep's later jobs nothing."""
    global unreachable
    if unreachable is None:
        unreachable = probe_server(timeout)
        if unreachable is not None:
            warnings.warn(
                f"W&B server unreachable ({unreachable}): this run, and every later one of this process or sweep, "
                "is logged offline; `wandb sync <run dir>/wandb` uploads them later",
                stacklevel=3,
            )
            return "offline"
        unreachable = ""  # reachable: not probed again
    return "offline" if unreachable else "online"


def online_or_offline_for(logger_cfg: Any) -> str:
    """`online_or_offline` within the logger's own limits: the probe's few seconds, at most `init_timeout`."""
    return online_or_offline(min(PROBE_TIMEOUT, logger_cfg.init_timeout))


def probe_for_sweep(logger_cfg: Any, cluster: bool) -> None:
    """Before a sweep's jobs start: an online W&B logger probes the server once here, and, when it is unreachable,
    the launcher's local worker processes (joblib, submitit's local executor) inherit that verdict instead of each
    probing again. Jobs on a cluster (`cluster`) probe from their own nodes, whose network may differ."""
    mode = logger_cfg.get("mode") if logger_cfg is not None and logger_cfg.get("name") == "wandb" else None
    if mode is None or wandb_mode(getattr(mode, "value", str(mode))) != "online" or cluster:
        return
    if online_or_offline_for(logger_cfg) == "offline":
        os.environ[UNREACHABLE_VARIABLE] = unreachable or "unreachable"


def wandb_mode(mode: str) -> str:
    """The mode `logger.mode=mode` asks for: auto is WANDB_MODE when set, else online when logged in."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if logged_in_to_wandb() else "offline"


def kept_on_resume(line: str, last_step: int) -> bool:
    """Whether a metrics.jsonl row survives a resume from episode `last_step`: a whole training or validation row
    logged at or before it. The test row is dropped whatever its step: a resumed run tests again."""
    try:
        row = json.loads(line)
    except ValueError:  # a line cut short by a kill
        return False
    step = row.get("step") if isinstance(row, dict) else None
    return isinstance(step, int) and step <= last_step and not any(k.startswith("test/") for k in row)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the rows of metrics.jsonl that `kept_on_resume` keeps (rewritten atomically)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if kept_on_resume(line, last_step)]
    write_atomically(path, "".join(row + "\n" for row in rows))


class Tracker:
    def __init__(
        self,
        run_dir: Path,
        logger_cfg: Any | None = None,
        name: str | None = None,
        group: str | None = None,
        config: dict | None = None,
        tags: list[str] | None = None,
        resume: tuple[str | None, int] | None = None,
        job_type: str | None = None,
    ):
        """`resume=(W&B run id, episode)` continues a run: `metrics.jsonl` drops the rows logged after that
        episode (they will be logged again), and W&B continues the same run when online (`resume="allow"`)
        or, offline, starts a new run whose config says which run it continues."""
        self.run_dir = Path(run_dir)
        if resume is not None:
            truncate_metrics(self.run_dir / METRICS_FILE, resume[1])
        self.metrics_file = open(self.run_dir / METRICS_FILE, "a")
        self.wandb_run = None
        if logger_cfg is not None and logger_cfg.name == "wandb" and logger_cfg.mode.value != "disabled":
            self._guard("init", self._init_wandb, logger_cfg, name, group, config, tags, resume, job_type)

    @property
    def run_id(self) -> str | None:
        return None if self.wandb_run is None else self.wandb_run.id

    def _init_wandb(
        self,
        logger_cfg: Any,
        name: str | None,
        group: str | None,
        config: dict | None,
        tags: list[str] | None,
        resume: tuple[str | None, int] | None,
        job_type: str | None,
    ) -> None:
        import wandb

        mode = wandb_mode(logger_cfg.mode.value)
        if mode == "online":  # an unreachable server costs a few seconds, once per process
            mode = online_or_offline_for(logger_cfg)
        previous_id = resume[0] if resume else None
        same_run = previous_id is not None and mode == "online"
        if previous_id is not None and not same_run:
            config = {**(config or {}), "resumed_from": previous_id, "resumed_at_episode": resume[1]}
        settings = dict(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            dir=str(self.run_dir),
            name=name,
            group=group,
            tags=tags,
            config=config,
            job_type=job_type,
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=logger_cfg.init_timeout),
        )
        try:
            self.wandb_run = wandb.init(
                mode=mode, id=previous_id if same_run else None, resume="allow" if same_run else None, **settings
            )
        except Exception as e:
            if mode != "online":
                raise
            warnings.warn(  # an unreachable server (or refused credentials) costs at most init_timeout
                f"W&B could not start an online run within logger.init_timeout={logger_cfg.init_timeout:g} s "
                f"({type(e).__name__}); continuing offline: `wandb sync {self.run_dir / 'wandb'}` uploads it later",
                stacklevel=2,
            )
            if previous_id is not None:  # offline, the continued run is a new one that says which it continues
                resumed = {"resumed_from": previous_id, "resumed_at_episode": resume[1]}
                settings["config"] = {**(settings["config"] or {}), **resumed}
            self.wandb_run = wandb.init(mode="offline", **settings)

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # W&B must never crash or lose a run
            warnings.warn(
                f"W&B {what} failed, continuing with local metrics only: {type(e).__name__}: {e}", stacklevel=2
            )
            self.wandb_run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        try:
            self.metrics_file.write(strict_json({"step": step, **metrics}) + "\n")
            self.metrics_file.flush()
        except OSError as e:  # a full disk: name the file (a flush's error has no name)
            raise OSError(e.errno, e.strerror, self.metrics_file.name) from e
        if self.wandb_run is not None:
            self._guard("log", self.wandb_run.log, metrics, step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        """PNG files as W&B images (not written to metrics.jsonl)."""
        if self.wandb_run is not None:
            self._guard("log", self._log_images, images, step)

    def _log_images(self, images: dict[str, Path], step: int) -> None:
        import wandb

        self.wandb_run.log({key: wandb.Image(str(path)) for key, path in images.items()}, step=step)

    def log_table(self, key: str, table: Any, step: int) -> None:
        """A pandas DataFrame as a W&B table (not written to metrics.jsonl)."""
        if self.wandb_run is not None:
            self._guard("log", self._log_table, key, table, step)

    def _log_table(self, key: str, table: Any, step: int) -> None:
        import wandb

        self.wandb_run.log({key: wandb.Table(dataframe=table)}, step=step)

    def log_histogram(self, key: str, values: list[float], step: int) -> None:
        """Values as a W&B histogram (not written to metrics.jsonl)."""
        if self.wandb_run is not None:
            self._guard("log", self._log_histogram, key, values, step)

    def _log_histogram(self, key: str, values: list[float], step: int) -> None:
        import wandb

        self.wandb_run.log({key: wandb.Histogram(values)}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self._guard("summary", self.wandb_run.summary.update, metrics)

    def finish(self, exit_code: int = 0) -> None:
        self.metrics_file.close()
        if self.wandb_run is not None:
            self._guard("finish", self.wandb_run.finish, exit_code)
