"""Kill a real training process at many points (SIGKILL, including in the middle of a checkpoint write and
of a metrics line, and a graceful SIGTERM), resume it each time, and check that it ends bit-for-bit where an
uninterrupted run ends: same parameters, same results.json, same metrics.jsonl."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
from conftest import run_cli

CONFIG = [
    "train.episodes=40",
    "train.val_every=10",
    "train.log_every=5",
    "train.checkpoint_every=5",
    "train.val_episodes=10",
    "eval.episodes=20",
    "encoder.hidden=16",
    "encoder.out_channels=16",
    "logger=none",
]

DRIVER = """
import os, signal, sys, torch
import fewshot_exp.data.episodes, fewshot_exp.run, fewshot_exp.tracking, fewshot_exp.train
calls = 0
def fault(owner, name, nth, sig=signal.SIGKILL, before=None):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == nth:
            if before is not None:
                before(*args, **kwargs)
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)
def half_written(obj, f, *args, **kwargs):
    f.write(b"PK half a checkpoint"); f.flush()
def half_a_line(self, metrics, step):
    self.metrics_file.write('{"step": ' + str(step) + ', "train/lo'); self.metrics_file.flush()
%s
from fewshot_exp.__main__ import cli
sys.argv = ["fewshot_exp", *sys.argv[1:]]
cli()
"""

# (fault to inject, expected exit code): each process resumes from whatever the previous one left behind.
KILL_POINTS = [
    ("fault(fewshot_exp.data.episodes.EpisodeSampler, 'sample', 3)", -9),  # before the first metrics row
    ("fault(fewshot_exp.train, 'save_checkpoint', 1)", -9),  # after the first metrics row, before the first last.pt
    ("fault(torch, 'save', 1, before=half_written)", -9),  # in the middle of writing the first last.pt
    ("fault(fewshot_exp.data.episodes.EpisodeSampler, 'sample', 13)", -9),  # between checkpoints
    ("fault(torch, 'save', 2, before=half_written)", -9),  # in the middle of writing a later checkpoint
    ("fault(fewshot_exp.train, 'evaluate', 1)", -9),  # during validation
    ("fault(fewshot_exp.tracking.Tracker, 'log', 3, before=half_a_line)", -9),  # half a metrics line written
    ("fault(fewshot_exp.data.episodes.EpisodeSampler, 'sample', 4, sig=signal.SIGTERM)", 143),  # graceful stop
    ("fault(fewshot_exp.run, 'evaluate', 1)", -9),  # during the final test
    # after the test row was logged: writing timing.json (1st), test_episodes.csv (2nd), results.json (3rd)
    ("fault(fewshot_exp.run, 'write_atomically', 3)", -9),
]


def run(run_dir, fault: str = "", *extra: str) -> subprocess.CompletedProcess:
    return run_cli(*CONFIG, *extra, f"hydra.run.dir={run_dir}", code=DRIVER % fault)


def final_state(run_dir):
    params = torch.load(run_dir / "last.pt", weights_only=True)["algorithm"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return params, json.loads((run_dir / "results.json").read_text()), rows


@pytest.mark.slow
def test_killed_and_resumed_run_ends_bit_exact(glyphs_root, tmp_path):
    data = f"dataset.root={glyphs_root}"
    reference = tmp_path / "reference"
    proc = run(reference, "", data)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    episodes_done = []
    for fault, expected in KILL_POINTS:
        proc = run(resumed, fault, data, "resume=true")
        assert proc.returncode == expected, (fault, proc.stderr[-3000:])
        if (resumed / "last.pt").exists():
            episodes_done.append(torch.load(resumed / "last.pt", weights_only=True)["progress"]["episode"])
        assert not list(resumed.glob(".*.tmp")) or fault.startswith("fault(torch"), "temporary files pile up"
        if expected == 143:
            assert "stopped by signal SIGTERM" in proc.stderr, proc.stderr[-3000:]
    assert episodes_done == sorted(episodes_done) and episodes_done[-1] == 40  # progress was made and kept
    proc = run(resumed, "", data, "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]

    ref_params, ref_results, ref_rows = final_state(reference)
    params, results, rows = final_state(resumed)
    assert params.keys() == ref_params.keys()
    for name in params:
        assert torch.equal(params[name], ref_params[name]), name
    assert results == ref_results
    assert rows == ref_rows


@pytest.mark.slow  # the bad-input catalogue refuses the same three in the fast suite (one process each)
def test_resume_refuses_a_changed_config_and_fresh_runs_refuse_to_overwrite(glyphs_root, tmp_path):
    data = f"dataset.root={glyphs_root}"
    assert run(tmp_path, "", data, "train.episodes=10", "train.checkpoint_every=10").returncode == 0
    before = (tmp_path / "last.pt").read_bytes()
    proc = run(tmp_path, "", data, "train.episodes=10")
    assert proc.returncode == 2 and "already holds a run (last.pt, best.pt, results.json)" in proc.stderr
    proc = run(tmp_path, "", data, "train.episodes=10", "train.lr=0.5", "resume=true")
    assert (
        proc.returncode == 2
        and "config differs from the checkpoint's in train.checkpoint_every, train.lr" in proc.stderr
    )
    assert (tmp_path / "last.pt").read_bytes() == before  # nothing already written was touched
    (tmp_path / "last.pt").write_bytes(before[:100])
    proc = run(tmp_path, "", data, "train.episodes=10", "train.checkpoint_every=10", "resume=true")
    assert proc.returncode == 2 and "last.pt is unreadable" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_stop_message_s_resume_command_works_as_printed(glyphs_root, tmp_path):
    """`resume=<dir>` alone re-applies the run's own overrides (.hydra/overrides.yaml), so the hint printed at a
    graceful stop is the whole command, also for a sweep job, whose dir name holds '=' and ','."""
    fault = "fault(fewshot_exp.data.episodes.EpisodeSampler, 'sample', 4, sig=signal.SIGTERM)"
    sweep = ["train.lr=0.001", "train.lr_gamma=0.5", f"hydra.sweep.dir={tmp_path}"]
    stopped = run_cli("-m", *CONFIG, *sweep, f"dataset.root={glyphs_root}", code=DRIVER % fault)
    assert stopped.returncode == 143, stopped.stderr[-3000:]  # 128 + SIGTERM
    (job,) = [d for d in tmp_path.iterdir() if d.name.startswith("0_")]
    assert "train.lr=0.001,train.lr_gamma=0.5" in job.name
    hint = stopped.stderr.strip().splitlines()[-1].rpartition("continue with ")[2]
    assert hint == f"resume={job}"
    tmp_path = job
    proc = run_cli(hint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train/episodes"] == 40 and results["test/episodes"] == 20  # CONFIG's, not the defaults
    proc = run_cli(hint, "train.lr=0.5")  # an override given besides must agree with the checkpoint
    assert proc.returncode == 2 and "config differs from the checkpoint's in train.lr" in proc.stderr
    out = tmp_path.parent / "curve"
    curve = run_cli("eval_only=true", f"checkpoint={job}", f"hydra.run.dir={out}")
    assert curve.returncode == 0, curve.stderr[-3000:]  # the sweep job's dir as a bare override value parses too
    assert json.loads((out / "results.json").read_text())["curve"][0]["acc"] == results["test/acc"]


def test_deterministic_is_set_both_ways_for_the_next_job_of_a_multirun():
    from fewshot_exp.run import seed_everything

    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        seed_everything(0, deterministic=False)  # the sweep's next job, in the same process
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.benchmark
    finally:
        seed_everything(0, deterministic=False)
        torch.backends.cudnn.benchmark = False


def test_sgd_with_a_cosine_schedule_resumes_bit_exact_and_refuses_another_schedule(glyphs_root, tmp_path):
    """The optimizer and scheduler groups' states go into last.pt: stopped by SIGTERM mid-run and resumed, the run
    ends where an uninterrupted one does; the learning rate logged is the cosine schedule's."""
    chosen = [f"dataset.root={glyphs_root}", "optimizer=sgd", "scheduler=cosine", "train.lr=0.05"]
    assert run(tmp_path / "reference", "", *chosen).returncode == 0
    stop = "fault(fewshot_exp.data.episodes.EpisodeSampler, 'sample', 24, sig=signal.SIGTERM)"
    assert run(tmp_path / "resumed", stop, *chosen).returncode == 143
    proc = run(tmp_path / "resumed", "", *chosen, "scheduler=step", "resume=true")
    assert proc.returncode == 2 and "config differs from the checkpoint's in scheduler." in proc.stderr
    assert run(tmp_path / "resumed", "", *chosen, "resume=true").returncode == 0
    (ref_params, ref_results, ref_rows), (params, results, rows) = map(final_state, (tmp_path / "reference",
                                                                                    tmp_path / "resumed"))  # fmt: skip
    assert all(torch.equal(params[name], ref_params[name]) for name in ref_params)
    assert (results, rows) == (ref_results, ref_rows)
    lrs = {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}
    assert lrs[20] == pytest.approx(0.05 * (1 + math.cos(math.pi * 20 / 40)) / 2) and lrs[40] == pytest.approx(0)
