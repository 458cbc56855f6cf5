"""Sweeps through Hydra's launcher plugins, for real: joblib (parallel local processes) and submitit's local
executor, including a requeue (SIGUSR2, as SLURM sends before a time limit) that continues from last.pt."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cli_env, run_cli

TINY = ["train.val_every=10", "train.log_every=5", "train.val_episodes=10", "eval.episodes=20", "logger=none"]


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}


@pytest.mark.slow
def test_joblib_launcher_runs_the_jobs_in_parallel_processes(glyphs_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", "hydra/launcher=parallel", "episode.k_shot=1,2", "train.episodes=10", *TINY,
        f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stderr + proc.stdout
    done = results(sweep)
    assert [r["test/k_shot"] for r in done.values()] == [1, 2]
    assert json.loads((sweep / "sweep_summary.json").read_text())["finished"] == 2


@pytest.mark.slow
def test_joblib_workers_inherit_the_sweeps_verdict_on_an_unreachable_wandb_server(glyphs_root, tmp_path):
    """The launching process probes the server once; its joblib workers go offline without probing again."""
    sweep = tmp_path / "sweep"
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "k" * 40}
    proc = run_cli(
        "-m", "hydra/launcher=parallel", "seed=0,1", "train.episodes=10", *TINY[:-1], "logger=wandb",
        f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stderr + proc.stdout
    assert proc.stderr.count("W&B server unreachable (127.0.0.1:9: Connection refused)") == 1  # not once per worker
    jobs = sorted(d for d in sweep.iterdir() if (d / "results.json").is_file())
    assert len(jobs) == 2 and all(list(d.glob("wandb/offline-run-*/run-*.wandb")) for d in jobs)


def worker_pids(sweep: Path) -> list[int]:
    """Processes running a submitit job of this sweep (`python -m submitit.core._submit <sweep>/.submitit/..`)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and any(str(sweep).encode() in a for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_submitit_requeue_continues_from_the_jobs_own_checkpoint(glyphs_root, tmp_path):
    """SIGUSR2 mid-training: the job writes last.pt, submitit requeues it, the new process finds the
    checkpoint by its job id and finishes with exactly the results of an uninterrupted run."""
    episodes = 300
    args = [
        "episode.k_shot=1", "episode.n_query=5", f"train.episodes={episodes}", "train.checkpoint_every=10",
        "train.val_every=100", "train.log_every=10", "train.val_episodes=10", "eval.episodes=20", "logger=none",
        f"dataset.root={glyphs_root}",
    ]  # fmt: skip
    sweep = tmp_path / "sweep"
    launch = [sys.executable, "-m", "fewshot_exp", "-m", "hydra/launcher=slurm_local", *args]
    launch.append(f"hydra.sweep.dir={sweep}")
    proc = subprocess.Popen(
        launch, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for(lambda: list(sweep.glob("0_*/last.pt")), 240, "the job's first checkpoint")
        (worker,) = worker_pids(sweep)
        os.kill(worker, signal.SIGUSR2)
        output, _ = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the launcher, submitit's controller and its worker, if left
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output.decode()[-3000:]
    (job_dir,) = sweep.glob("0_*")
    log = (job_dir / "__main__.log").read_text()
    assert "requeued job submitit-local:" in log, log
    resumed_at = int(log.split("resuming")[1].split("at episode")[1].split()[0])
    assert 0 < resumed_at < episodes  # it stopped mid-training and continued
    assert not worker_pids(sweep)  # the first worker exited; the requeued one finished

    plain = run_cli(*args, f"hydra.run.dir={tmp_path / 'uninterrupted'}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    expected = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())
    assert json.loads((job_dir / "results.json").read_text()) == expected


@pytest.mark.slow
def test_optuna_sweeper_maximises_the_validation_accuracy_the_jobs_return(glyphs_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "hparams_search=protonet_optuna", "hydra.sweeper.n_trials=3", "train.episodes=10", *TINY,
        f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = results(sweep)
    assert len(trials) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r["val/best_acc"] for r in trials.values())
    assert set(best["best_params"]) == {"train.lr", "train.lr_gamma", "distance"}
    assert 1e-4 <= best["best_params"]["train.lr"] <= 1e-2


@pytest.mark.slow
def test_a_failed_optuna_trial_is_recorded_and_the_study_goes_on(glyphs_root, tmp_path):
    """k_shot=40 cannot fill an episode: those trials fail (FAIL in the study, error.txt, failed_jobs.jsonl),
    the others run, the best of the finished ones is reported and the sweep exits 1 with one line."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "hparams_search=protonet_optuna", "hydra.sweeper.n_trials=2", "episode.k_shot=choice(5,40)",
        "train.episodes=6", *TINY, f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"]) == (2, 1)  # TPE, seed 0: k_shot 40, then 5
    assert len(summary["failed"]) == 1
    assert all("k_shot + n_query = 40 + 15" in f["error"] for f in summary["failed"])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["episode.k_shot"] == 5
    assert best["best_value"] == max(r["val/best_acc"] for r in results(sweep).values())
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 jobs failed")


@pytest.mark.slow
@pytest.mark.parametrize(
    "search, jobs",
    [(["episode.k_shot=choice(40,45)"], 2), (["train.lr=tag(log, interval(1e-2, 1e-4))"], 0)],
    ids=["every-trial-fails", "invalid-range"],
)
def test_an_optuna_study_that_stops_writes_its_summary_and_one_line(search, jobs, glyphs_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "hparams_search=protonet_optuna", "hydra.sweeper.n_trials=2", *search, "train.episodes=6", *TINY,
        f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the sweep stopped (")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], len(summary["failed"])) == (jobs, 0, jobs)
