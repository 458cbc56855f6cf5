"""Faults a cluster user meets: two runs on one dir, a sweep into a dir in use, a stop by signal in any phase, a
full disk, a restart before the first checkpoint, a run of one test episode. Each run is a real CLI process."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time

import forkserver
import pytest
from conftest import REPO, cli_env, run_cli
from test_bad_inputs import digest
from test_resume import DRIVER

from fewshot_exp import files
from fewshot_exp.run_lock import DirInUse, held

TINY = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "train.log_every=2", "eval.episodes=4",
        "encoder.hidden=8", "encoder.out_channels=8", "logger=none"]  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_a_run_dir_in_use_refuses_a_second_run_and_a_resume_and_is_left_as_it_was(glyphs_root, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}").returncode == 0
    before = digest(run_dir)
    with held(run_dir):  # this process holds it, as a running training does
        for second in ([*TINY, "seed=1"], [*TINY, "resume=true"]):
            proc = run_cli(*second, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
            assert proc.returncode == 2
            line = one_error_line(proc.stderr)
            assert line.startswith(f"error: run dir {run_dir} is in use by another run (pid {os.getpid()} on "), line
            assert digest(run_dir) == before


@pytest.mark.slow  # a real training holds the dir here; the test above holds it from this process
def test_a_run_dir_belongs_to_one_process_and_a_dead_holder_blocks_nothing(glyphs_root, tmp_path):
    run_dir = tmp_path / "run"
    long = ["train.episodes=400", "train.val_every=400", "train.log_every=10", "train.checkpoint_every=10",
            "eval.episodes=4", "encoder.hidden=8", "encoder.out_channels=8", "logger=none"]  # fmt: skip
    first = subprocess.Popen(
        forkserver.command([*long, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}"]),
        cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # the first run may generate the glyphs cache
        while not (run_dir / "last.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run_dir / "last.pt").is_file(), "the first run never checkpointed"
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        for second in ([*TINY, "seed=1"], [*long, "resume=true"]):  # a fresh run, a resume: both refused
            proc = run_cli(*second, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
            assert proc.returncode == 2
            line = one_error_line(proc.stderr)
            assert line.startswith(f"error: run dir {run_dir} is in use by another run (pid {first.pid} on "), line
            assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides  # the first run's, put back
        first.kill()  # the holder dies: its lock goes with it
        first.wait(timeout=30)
    finally:
        first.kill()
    proc = run_cli(*long, "resume=true", f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(10, 401, 10))  # each row once: one writer


def test_a_sweep_into_a_sweep_dir_in_use_is_refused_before_any_job(glyphs_root, tmp_path):
    with held(tmp_path, "sweep dir"):
        proc = run_cli("-m", "seed=0,1", *TINY, f"dataset.root={glyphs_root}", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).startswith(f"error: sweep dir {tmp_path} is in use by another run (pid ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no multirun.yaml, no job dir


def test_the_lock_refuses_a_second_holder_in_another_process(tmp_path):
    code = "from fewshot_exp.run_lock import held; import sys, pathlib\nwith held(pathlib.Path(sys.argv[1])): pass"
    with held(tmp_path):
        proc = subprocess.run(forkserver.command([str(tmp_path)], code), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "DirInUse: run dir" in proc.stderr
    proc = subprocess.run(forkserver.command([str(tmp_path)], code), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # released at the end of the block
    with pytest.raises(DirInUse), held(tmp_path), held(tmp_path):
        pass  # a second open of the lock file is another holder, even in one process


def test_a_restart_before_the_first_checkpoint_logs_each_row_once(glyphs_root, tmp_path):
    """A run killed after its first metrics rows but before its first last.pt starts again from episode 0 (with or
    without resume=true), without the killed run's rows."""
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    assert run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={reference}").returncode == 0
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 2, "train/loss": 9.0}\n{"step": 4, "train/lo')
    proc = run_cli(*TINY, "resume=true", f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


# (the fault of test_resume.DRIVER, the phase the message names, the signal); training has its own test there
SLOW = pytest.mark.slow  # the same path as its neighbours: make test-full runs them
PHASES = [
    pytest.param("fault(fewshot_exp.run, 'validate', 1, sig=signal.SIGINT)", "start-up", "SIGINT"),
    pytest.param("fault(fewshot_exp.run, 'load_splits', 1, sig=signal.SIGTERM)", "loading data", "SIGTERM", marks=SLOW),
    pytest.param("fault(fewshot_exp.run, 'evaluate', 1, sig=signal.SIGTERM)", "the final test", "SIGTERM"),
    pytest.param("fault(fewshot_exp.run, 'evaluate', 1, sig=signal.SIGINT)", "the final test", "SIGINT", marks=SLOW),
    pytest.param(
        "fault(fewshot_exp.run, 'write_atomically', 3, sig=signal.SIGINT)", "writing results", "SIGINT", marks=SLOW
    ),
]


@pytest.mark.parametrize("fault,phase,sig", PHASES, ids=[f"{p.values[2]} during {p.values[1]}" for p in PHASES])
def test_a_signal_in_any_phase_ends_with_one_line_and_its_exit_status(fault, phase, sig, glyphs_root, tmp_path):
    proc = run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={tmp_path}", code=DRIVER % fault)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith(f"stopped: stopped by {sig} during {phase}; "), line
    if (tmp_path / "last.pt").is_file():  # trained: resuming finishes the run
        assert line.endswith(f"continue with resume={tmp_path}")
        proc = run_cli(*TINY, f"dataset.root={glyphs_root}", f"resume={tmp_path}")
        assert proc.returncode == 0 and json.loads((tmp_path / "results.json").read_text())["test/episodes"] == 4
    else:
        assert line.endswith("nothing to resume yet: run the command again")


FULL_DISK = """
import collections, shutil
usage = collections.namedtuple("usage", "total used free")
shutil.disk_usage = lambda path: usage(2**30, 2**30 - 1024, 1024)  # 1 KiB free
"""


def test_a_full_disk_is_named_in_one_line_before_a_checkpoint_is_written(glyphs_root, tmp_path):
    proc = run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={tmp_path}", code=DRIVER % FULL_DISK)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert line.startswith("error: no space left on device (about ") and line.endswith(f"free): {tmp_path}/best.pt")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_on_a_full_disk_is_enospc_and_leaves_nothing(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without errno: the writer names it from the free space."""
    target = tmp_path / "last.pt"
    target.write_text("the previous checkpoint")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30, 0))
    with pytest.raises(OSError) as raised, files.atomic_writer(target) as f:
        f.write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_text() == "the previous checkpoint" and sorted(tmp_path.iterdir()) == [target]


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root may mount one in most containers and CI machines; skipped where it cannot)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_run_on_a_really_full_disk_stops_with_one_line_and_keeps_the_disk_clean(small_disk, glyphs_root):
    """No simulation: the run dir is on a 1 MiB file system, too small for the first checkpoint of the default
    Conv-4 (about 1.4 MB with Adam's state)."""
    run_dir = small_disk / "run"
    default_encoder = [o for o in TINY if not o.startswith("encoder.")]
    proc = run_cli(*default_encoder, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith("error: no space left on device"), line
    assert line.endswith((f"{run_dir}/best.pt", f"{run_dir}/last.pt")), line
    assert not list(run_dir.glob("*.pt")) and not list(run_dir.glob(".*.tmp"))  # no partial checkpoint left


def test_a_write_that_fills_a_real_disk_is_enospc_and_leaves_the_old_file(small_disk):
    target = small_disk / "metrics.jsonl"
    target.write_text("the rows written so far\n")
    (small_disk / "filler").write_bytes(b"x" * (1024 * 1024 - 64 * 1024))  # the disk nearly full
    with pytest.raises(OSError) as raised:
        files.write_atomically(target, "y" * (256 * 1024))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_text() == "the rows written so far\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics.jsonl"]


def test_one_test_episode_gives_strict_json_with_a_null_interval(glyphs_root, tmp_path):
    proc = run_cli(*TINY, "eval.episodes=1", f"dataset.root={glyphs_root}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    results = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert results["test/episodes"] == 1 and results["test/acc_ci95"] is None
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)
