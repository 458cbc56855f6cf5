"""Failure isolation for `-m` sweeps.

A job that fails (bad combination, diverged loss, crash) writes `error.txt` into its own run dir and
appends a line to `<sweep dir>/failed_jobs.jsonl`, then returns, so the other jobs still run. When
the sweep ends, the `SweepSummary` Hydra callback (registered in conf/config.yaml) writes
`<sweep dir>/sweep_summary.json` and keeps a one-line message naming the failed jobs in
`failure_message`, which the CLI prints as `error: ...` before exiting with code 1. The launching process holds
the sweep dir's lock (fewshot_exp/run_lock.py) from the sweep's start to its end, so a second sweep into the
same dir is refused before any job starts.
"""

from __future__ import annotations

import json
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from fewshot_exp.errors import UserError
from fewshot_exp.files import write_atomically
from fewshot_exp.run_lock import DirInUse, held

FAILED_JOBS = "failed_jobs.jsonl"


failure_message: str | None = None  # set in the launching process when a sweep ends with failed jobs
_sweep_lock = ExitStack()  # the sweep dir's lock (fewshot_exp/run_lock.py), held by the launching process


_running: tuple[SweepSummary, Any] | None = None  # the sweep under way in this process: its callback and config


def summarise_stopped_sweep() -> str | None:
    """When the sweeper itself stopped (Optuna with every trial failed, a search range it refuses): write the
    summary of what ran, as at a sweep's end; its path, or None when no sweep was under way."""
    if _running is None:
        return None
    summary, config = _running
    summary.on_multirun_end(config)
    return str(Path(config.hydra.sweep.dir) / "sweep_summary.json")


def release_lock() -> None:
    """Release the sweep dir's lock, if held (at the sweep's end, or when the CLI returns however it ends)."""
    _sweep_lock.close()


USER_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def job_overrides(parsed: list[Any]) -> tuple[list[str], list[str]]:
    """(the sweep's algorithms, the overrides of its first job but the algorithm): each swept key at its first
    value; keys whose values cannot be listed (an Optuna interval) are left out."""
    algorithms: list[str] = []
    first: list[str] = []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        if not o.is_sweep_override():
            (algorithms if o.key_or_group == "algorithm" else first).append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # not a list of values (interval): the sweeper chooses them
            continue
        if o.key_or_group == "algorithm":
            algorithms += [f"algorithm={v}" for v in values]
        elif values:
            first.append(f"{o.get_key_element()}={values[0]}")
    return algorithms, first


SLURM_LAUNCHERS = ("slurm", "submitit_slurm")


def check_launcher(argv: list[str]) -> None:
    """A SLURM launcher on a machine without SLURM's commands: refused before any job is submitted."""
    import shutil

    launchers = [a.partition("=")[2] for a in argv if a.lstrip("+").startswith("hydra/launcher=")]
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if launchers and launchers[-1] in SLURM_LAUNCHERS and missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(
            f"hydra/launcher={launchers[-1]} submits to SLURM, but {' and '.join(missing)} {verb} not on PATH here; "
            "run it on the cluster's login node, or try the sweep on this machine with hydra/launcher=slurm_local"
        )


def check_sweep(argv: list[str], config_dir: str) -> None:
    """Before a `-m` sweep starts any job (in this process, in joblib's workers or on a cluster): each algorithm
    of the sweep is composed once, with every other swept key at its first value, and refused as its jobs would
    refuse it: a misspelled key or option, or a distance the algorithm does not use (its jobs would repeat each
    other). A sweep the parser cannot read, or one that adds the user's own config dir, is left to its jobs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fewshot_exp.build import check_distance_used, distance_overrides
    from fewshot_exp.typos import check_known_keys

    given = [a for a in argv if not a.startswith("-")]
    own_configs = any(a.split("=")[0] in USER_CONFIG_FLAGS or a.lstrip("+").startswith("hydra.searchpath")
                      for a in argv)  # fmt: skip
    if not ({"-m", "--multirun"} & set(argv)) or own_configs:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except Exception:
        return
    algorithms, first = job_overrides(parsed)
    shown = [a for a in given if distance_overrides([a])]
    with initialize_config_dir(config_dir, version_base="1.3"):
        for algorithm in algorithms or [None]:
            cfg = compose("config", overrides=[*first, *([algorithm] if algorithm else [])])
            check_known_keys(cfg)
            check_distance_used(cfg, shown)


def record_failure(run_dir: Path, sweep_dir: Path, job: str, error: BaseException, own_dir: bool = True) -> None:
    """The failure in `<run_dir>/error.txt` (only if `own_dir`: not into a dir another process holds) and a line
    of `<sweep_dir>/failed_jobs.jsonl`."""
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    if own_dir:
        (run_dir / "error.txt").write_text(message + "\n\n" + "".join(traceback.format_exception(error)))
    with open(sweep_dir / FAILED_JOBS, "a") as f:
        f.write(json.dumps({"job": job, "run_dir": str(run_dir), "error": message}) + "\n")


def job_dirs(sweep_dir: Path) -> dict[str, int]:
    """{job dir: mtime of its .hydra/config.yaml}, which Hydra writes when the job starts. rglob: a job dir named
    by an override holding a `/` is nested, not lost from the count."""
    return {str(p.parent.parent.resolve()): p.stat().st_mtime_ns for p in sweep_dir.rglob(".hydra/config.yaml")}


def failure_lines(sweep_dir: Path) -> list[str]:
    path = sweep_dir / FAILED_JOBS
    return path.read_text().splitlines() if path.exists() else []


class SweepSummary(Callback):
    """Summarises the sweep that ran, also in a sweep dir reused from an earlier sweep: its jobs are the job dirs
    started since the sweep began (new, or written again), its failures the lines added since."""

    def __init__(self) -> None:
        self.before: dict[str, int] = {}
        self.failures_before = 0

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _running
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            _sweep_lock.enter_context(held(sweep_dir, "sweep dir", "choose another hydra.sweep.dir"))
        except DirInUse as e:  # Hydra turns a callback's exception into a warning: stop here, before any job
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        self.before, self.failures_before = job_dirs(sweep_dir), len(failure_lines(sweep_dir))
        _running = (self, config)
        from fewshot_exp.tracking import probe_for_sweep

        launcher = str(config.hydra.launcher.get("_target_", ""))
        probe_for_sweep(config.get("logger"), cluster="Slurm" in launcher)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        global _running
        _running = None
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = [json.loads(line) for line in failure_lines(sweep_dir)[self.failures_before :]]
        jobs = sorted(job for job, started in job_dirs(sweep_dir).items() if self.before.get(job) != started)
        failed_dirs = {str(Path(f["run_dir"]).resolve()) for f in failures}
        finished = [job for job in jobs if (Path(job) / "results.json").is_file() and job not in failed_dirs]
        summary = {"jobs": len(jobs), "finished": len(finished), "finished_runs": finished, "failed": failures}
        write_atomically(sweep_dir / "sweep_summary.json", json.dumps(summary, indent=2) + "\n")
        release_lock()
        if failures:
            global failure_message
            names = "; ".join(f"{f['job'] or Path(f['run_dir']).name} ({f['error']})" for f in failures)
            failure_message = (
                f"{len(failures)} of {len(jobs)} jobs failed: {names}. Each has error.txt in its run "
                f"dir; see {sweep_dir / 'sweep_summary.json'}"
            )
