"""`python -m fewshot_exp [overrides]`: the Hydra entry point. Wiring only.

A user's mistake (bad override, unknown option, out-of-range value, missing data) is printed as
one line `error: ...` with exit code 2 and no traceback; a bug still shows its full traceback.
`HYDRA_FULL_ERROR=1` shows the traceback of a user's mistake too.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from fewshot_exp import plugins, stopping, sweep
from fewshot_exp.build import check_distance_used
from fewshot_exp.config import register_configs
from fewshot_exp.errors import UserError
from fewshot_exp.extras import check_extras
from fewshot_exp.resume import saved_overrides
from fewshot_exp.run_lock import DirInUse, held
from fewshot_exp.sweep import record_failure
from fewshot_exp.tracking import UNREACHABLE_VARIABLE
from fewshot_exp.train import DivergedError, Interrupted
from fewshot_exp.typos import check_known_keys, explain

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
USER_ERRORS = (UserError, DivergedError, HydraException, OmegaConfBaseException)
register_configs()


NOISE = re.compile(r"(reference_type=|object_type=|provider=|Config search path|base_\w+$)")


def one_line(e: BaseException) -> str:
    """Hydra/OmegaConf messages span several lines (full_key, types, search path, options); keep what a user
    needs on one line: the message, the key, and the available options of a group (without schema entries).
    A UserError raised inside a class Hydra instantiates is reported as itself."""
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__
    if cause is not None:
        return str(cause)
    text = str(e)
    if e.__cause__ is not None and str(e.__cause__) not in text:
        text += "\n" + str(e.__cause__)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not NOISE.match(line.strip())]
    start = _options_start(lines)
    head, options = lines[: start + 1], lines[start + 1 :]
    message = explain("; ".join(head) + (f" {', '.join(options)}" if options else ""))
    if "missing EQUAL" in message:  # a word on its own: most often the rest of an unquoted value with a space
        message += "; a value with spaces must be quoted for the shell and for Hydra: key=\"'a b'\""
    return message


def _options_start(lines: list[str]) -> int:
    """Index of Hydra's "Available options in 'group':" line (len(lines) if absent)."""
    return next((i for i, line in enumerate(lines) if line.startswith("Available options")), len(lines))


SHOW_TRACEBACK = False  # set by cli() from the user's HYDRA_FULL_ERROR


def exit_with_machine_error(e: OSError) -> None:
    """The machine's errors, not the config's (a full disk, a dir that cannot be made, a long name): one line and
    exit status 1."""
    if SHOW_TRACEBACK:
        raise e
    print(f"error: {os_error(e)}", file=sys.stderr)
    sys.exit(1)


def exit_with(e: BaseException) -> None:
    if SHOW_TRACEBACK:
        raise e
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from fewshot_exp.run import run_experiment

    hc = HydraConfig.get()
    multirun = hc.mode.name == "MULTIRUN"
    try:
        check_known_keys(cfg)
        check_distance_used(cfg, list(hc.overrides.task))
    except UserError as e:
        exit_with(e)
    group = cfg.logger.group or (Path(hc.sweep.dir).name if multirun else cfg.experiment_name)
    name = hc.job.override_dirname or cfg.experiment_name
    run_dir = Path(hc.runtime.output_dir)
    stopping.enter("start-up", run_dir)
    try:
        with held(run_dir):
            if cfg.eval_only:
                from fewshot_exp.shot_curve import run_shot_curve

                results = run_shot_curve(cfg, run_dir, name, group, dict(hc.runtime.choices))
            else:
                results = run_experiment(cfg, run_dir, name=name, group=group, choices=dict(hc.runtime.choices))
    except Exception as e:
        if isinstance(e, Interrupted):  # a signal stops the whole sweep, not just this job
            print(f"stopped: {e}", file=sys.stderr)
            sys.exit(stopping.exit_status(e.signum))
        if multirun:  # isolate the failure: record it, let the other jobs run
            # a dir another process holds is left as it is (no error.txt written into it)
            own = not isinstance(e, DirInUse)
            record_failure(run_dir, Path(hc.sweep.dir), hc.job.override_dirname, e, own_dir=own)
            print(f"job {hc.job.num} failed: {one_line(e)}", file=sys.stderr)
            if "optuna" in str(hc.sweeper.get("_target_", "")):  # the sweeper marks a trial that raises FAIL;
                raise  # one returning NaN, optuna 2 refuses and the study stops
            return float("nan")
        if isinstance(e, USER_ERRORS):  # reported here, or Hydra adds its own "Error executing job" line
            exit_with(e)
        if isinstance(e, OSError):  # reported here too, or Hydra adds its "Error executing job" line
            exit_with_machine_error(e)
        raise
    if "curve" in results:
        for p in results["curve"]:
            print(f"{p['n_way']}-way {p['k_shot']}-shot: {100 * p['acc']:.2f}% ± {100 * p['ci95']:.2f}%")
        print(f"run dir: {hc.runtime.output_dir}")
        return results["curve"][0]["acc"]
    print(
        f"test accuracy: {100 * results['test/acc']:.2f}% ± {100 * results['test/acc_ci95']:.2f}% "
        f"(95% CI over {results['test/episodes']} episodes, {cfg.episode.n_way}-way {cfg.episode.k_shot}-shot)"
    )
    if "test/lake_error" in results:
        print(f"Omniglot one-shot runs: {results['test/lake_error']:.2f}% mean error")
    print(f"run dir: {hc.runtime.output_dir}")
    return results["val/best_acc"]


def quoted(value: str) -> str:
    """`value` as a Hydra override value: quoted, so that a sweep job's dir name (`0_train.lr=0.1,seed=1`) parses."""
    quote = "'" if "'" not in value else '"'
    return f"{quote}{value}{quote}"


def unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


PATH_KEYS = ("checkpoint", "train.init_from", "dataset.root", "eval.dataset_root", "eval.lake_runs", "encoder.weights")


def quoted_paths(argv: list[str]) -> list[str]:
    """Path overrides naming an existing file or dir, quoted: a sweep job's dir (`.../0_train.lr=0.1,seed=1`) does
    not parse as a bare override value (a comma-separated list of paths, a sweep, is left alone)."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        needs_quotes = any(c in value for c in "=,") and value[:1] not in "'\""
        out.append(f"{key}={quoted(value)}" if key in PATH_KEYS and needs_quotes and Path(value).exists() else arg)
    return out


def check_dirs(argv: list[str]) -> None:
    """`hydra.run.dir=` or `hydra.sweep.dir=` left empty would write the run into the working directory."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and not unquoted(value).strip():
            exit_with(UserError(f"{key} is empty: give a directory, or leave {key} out for the default"))


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<run dir>` means `resume=true hydra.run.dir=<run dir>` with that run's own overrides (those not given
    again): continue that run in place."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "resume" and value.lower() not in ("true", "false"):
            clash = next((a for a in argv if a in ("-m", "--multirun") or a.startswith("hydra.run.dir=")), None)
            if clash is not None:  # the run would go elsewhere and start afresh
                exit_with(
                    UserError(f"resume={value} continues that run in its own dir; drop {clash.partition('=')[0]}")
                )
            if not (Path(value) / ".hydra").is_dir():
                exit_with(
                    UserError(
                        f"resume={value}: not a run dir (no .hydra folder); pass the dir of the run to "
                        "continue, or resume=true with hydra.run.dir=<dir>"
                    )
                )
            # hparams_search presets set hydra.mode=MULTIRUN: re-applied, they would start a new study
            out = saved_overrides(Path(value), argv, skip=("resume", "hparams_search")) + out
            out += ["resume=true", f"hydra.run.dir={quoted(str(Path(value).resolve()))}"]
        else:
            out.append(arg)
    return out


@contextmanager
def hydra_files_kept_on_failure(argv: list[str]) -> Iterator[None]:
    """Hydra rewrites `<run dir>/.hydra/*.yaml` before the job starts; when the job is refused (resuming with
    another config, a fresh run into a used dir), put the earlier run's files back."""
    run_dirs = [Path(unquoted(a.partition("=")[2])) for a in argv if a.startswith("hydra.run.dir=")]
    folder = run_dirs[-1] / ".hydra" if run_dirs else None
    saved = {p: p.read_bytes() for p in folder.glob("*") if p.is_file()} if folder and folder.is_dir() else {}
    try:
        yield
    except BaseException as e:
        if not (isinstance(e, SystemExit) and e.code in (0, None)):
            for path, data in saved.items():
                path.write_bytes(data)
        raise


SCHEMA_OPTION = re.compile(r"\bbase_\w+(, )?")


def print_help() -> None:
    """Hydra's --help, without the schema entries (`base_<name>`) that its group lists show beside the choices."""
    text = io.StringIO()
    with redirect_stdout(text):
        try:
            main()
        except SystemExit as e:
            if e.code not in (0, None):
                raise
    print(SCHEMA_OPTION.sub("", text.getvalue()), end="")


def os_error(e: OSError) -> str:
    """ "no space left on device: <path>" and the like: the system's message, the path, no traceback."""
    reason = e.strerror or str(e)
    reason = reason[:1].lower() + reason[1:]
    return f"{reason}: {e.filename}" if e.filename else reason


def cli() -> None:
    global SHOW_TRACEBACK
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    SHOW_TRACEBACK = user_setting == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's multi-line report
    previous_sigterm = stopping.install()
    sweep_verdict = os.environ.get(UNREACHABLE_VARIABLE)  # a sweep's W&B probe is for its own workers only
    sweep.failure_message = None  # of an earlier sweep of this process
    try:
        plugins.check_loaded()
        check_dirs(sys.argv[1:])
        sys.argv[1:] = resume_argv(quoted_paths(sys.argv[1:]))
        check_extras(sys.argv[1:])
        sweep.check_launcher(sys.argv[1:])
        sweep.check_sweep(sys.argv[1:], CONF_DIR)
        if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
            print_help()
            return
        with hydra_files_kept_on_failure(sys.argv[1:]):
            main()
    except USER_ERRORS as e:
        exit_with(e)
    except (KeyboardInterrupt, stopping.Stopped) as e:
        if SHOW_TRACEBACK:
            raise
        signum = e.signum if isinstance(e, stopping.Stopped) else signal.SIGINT
        print(f"stopped: {stopping.message(signum)}", file=sys.stderr)
        sys.exit(stopping.exit_status(signum))
    except OSError as e:  # raised before or around a job (making the run dir, the launcher)
        exit_with_machine_error(e)
    except Exception as e:  # jobs' errors stay in their jobs (main): this is the sweeper's own, such as Optuna's
        summary = sweep.summarise_stopped_sweep()
        if summary is None or SHOW_TRACEBACK:
            raise
        jobs = sweep.failure_message or f"no job had failed; see {summary}"
        print(f"error: the sweep stopped ({type(e).__name__}: {one_line(e)}); {jobs}", file=sys.stderr)
        sys.exit(1)
    finally:
        sweep.release_lock()
        stopping.restore(previous_sigterm)
        for variable, value in (("HYDRA_FULL_ERROR", user_setting), (UNREACHABLE_VARIABLE, sweep_verdict)):
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    if sweep.failure_message:
        print(f"error: {sweep.failure_message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
