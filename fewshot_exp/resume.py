"""Continuing a run: what a checkpoint keeps for it besides the weights (every random state, `rng_state`), how a
run dir is continued (`resume=true`, `resume=<run dir>` with the run's own overrides, a scheduler's requeue), and
the checks that refuse a conflicting one (another config, another kind of device, a fresh run into a used dir).
Which keys `last.pt` must hold is `checkpoint.RESUME_KEYS`; the command line's `resume=<run dir>` is rewritten by
`fewshot_exp.__main__.resume_argv`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fewshot_exp.checkpoint import RESUME_KEYS, load_checkpoint
from fewshot_exp.config import flat
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.encoders.base import MOVED_TARGETS
from fewshot_exp.errors import UserError
from fewshot_exp.files import remove_partial_writes
from fewshot_exp.scheduler import is_requeue, job_id

log = logging.getLogger(__name__)


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


def resume_state(cfg: Any, run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The last.pt state to continue from, None to start afresh; refuses to overwrite another run's checkpoints."""
    last = run_dir / "last.pt"
    remove_partial_writes(run_dir)
    if not cfg.resume and last.exists() and job_id() is not None:  # run by a scheduler: maybe its requeue
        state = load_checkpoint(last, map_location="cpu", needs=RESUME_KEYS)
        if is_requeue(state, finished=(run_dir / "results.json").exists()):
            log.info("requeued job %s: continuing its run", state["job_id"])
            return checked_resume(cfg, last, state, device)
    if not cfg.resume:
        held = held_run_files(run_dir)
        if held:
            raise UserError(
                f"{run_dir} already holds a run ({', '.join(held)}): pass resume=true to continue it, or choose "
                "another hydra.run.dir (for a sweep, hydra.sweep.dir)"
            )
        return None
    if not last.exists():
        log.info("resume=true but %s has no last.pt yet: starting from the beginning", run_dir)
        return None
    state = load_checkpoint(last, map_location="cpu", needs=RESUME_KEYS)
    if (run_dir / "best.pt").exists():  # read at the end of training: a damaged one is found now, not then
        load_checkpoint(run_dir / "best.pt", map_location=device)
    return checked_resume(cfg, last, state, device)


def held_run_files(run_dir: Path) -> list[str]:
    """The files of an earlier run in `run_dir` that a new run would overwrite."""
    return [name for name in ("last.pt", "best.pt", "results.json") if (run_dir / name).exists()]


def checked_resume(cfg: Any, last: Path, state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """`state` (read from `last`) if its config matches the run's and it was written on the same kind of device,
    else a UserError naming the differences."""
    differences = config_differences(cfg, state["config"])
    if differences:
        raise UserError(
            f"cannot resume {last}: the config differs from the checkpoint's in "
            f"{', '.join(differences[:5])}{' ...' if len(differences) > 5 else ''}"
        )
    check_resume_device(state, device, last)
    log.info("resuming %s at episode %d", last.parent, state["progress"]["episode"])
    return state


def config_differences(cfg: Any, saved_yaml: str) -> list[str]:
    """Dotted keys whose values differ between the config and a checkpoint's (`resume` aside)."""
    now = flat(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), skip=frozenset())
    then = flat(OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=True), skip=frozenset())
    if "encoder._target_" in then:  # a checkpoint written before the encoders package names its old class path
        then["encoder._target_"] = MOVED_TARGETS.get(then["encoder._target_"], then["encoder._target_"])
    return sorted(
        k
        for k in now.keys() | then.keys()
        if k not in ("resume", "viz", "viz_projection")
        and str(now.get(k)) != str(then.get(k))
        # a key the saved config lacks (a schema key newer than the checkpoint) is no difference at its default,
        # so a checkpoint resumes under a version that adds config keys
        and not (k not in then and now.get(k) == schema_default(cfg, k))
    )


def schema_default(cfg: Any, key: str) -> Any:
    """The default of dotted `key` in the structured-config schema of its node (an Enum as its name), or a value
    no config holds when there is none."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    field = fields.get(leaf)
    if field is None or field.default is dataclasses.MISSING:
        return object()
    default = getattr(field.default, "name", field.default)
    if isinstance(default, str) and default.startswith("${"):  # an interpolation (scheduler.step_size): what it gives
        return OmegaConf.select(cfg, key)
    return default


def rng_state(sampler: EpisodeSampler) -> dict[str, Any]:
    """Every random state a resume must restore; CUDA's only for the run's own GPU (no context on the others)."""
    device = sampler.generator.device
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "sampler": sampler.generator.get_state()}
    state["device"] = device.type
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], sampler: EpisodeSampler) -> None:
    """Restore `rng_state`'s states; they are CPU ByteTensors whatever the checkpoint was loaded with."""
    device = sampler.generator.device
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    sampler.generator.set_state(state["sampler"].cpu())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def check_resume_device(state: dict[str, Any], device: torch.device, last: Path) -> None:
    """Fail before training if `last` was written on another kind of device: its sampler state cannot continue
    on this one (a CUDA generator's state is 16 bytes, a CPU one's 5056)."""
    now = device.type
    then = state["rng"]["device"]
    if then != now:
        raise UserError(
            f"cannot resume {last}: it was written by a run on {then} and this one is on {now}; its random "
            f"states continue only on the same kind of device (set device={then})"
        )
