"""Cluster schedulers: recognise a requeued job, so that it continues from its own checkpoint.

SLURM (directly or through submitit, `hydra/launcher=submitit_slurm` / `slurm`) requeues a job that hit
its time limit or was preempted under the same job id, and submitit's local executor restarts it under
the same controller id. Every checkpoint records that id; a job that starts in a run dir whose `last.pt`
carries its own id, and that has no results yet, is a requeue and resumes instead of refusing the dir.

Submitit warns a job with SIGUSR2 before its time runs out; the training loop then writes `last.pt`
and hands the signal back to submitit, which requeues the job.
"""

from __future__ import annotations

import os
import signal
from typing import Any


def job_id() -> str | None:
    """The id the scheduler keeps across requeues of this job; None when not run by a scheduler."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    if "SLURM_JOB_ID" in env:
        return f"slurm:{env['SLURM_JOB_ID']}"
    if "SUBMITIT_LOCAL_JOB_ID" in env:
        return f"submitit-local:{env['SUBMITIT_LOCAL_JOB_ID']}"
    return None


def is_requeue(state: dict[str, Any], finished: bool) -> bool:
    """Whether a checkpoint's run is this very job, started again by its scheduler before it finished."""
    current = job_id()
    return not finished and current is not None and state.get("job_id") == current


REQUEUE_SIGNAL = signal.SIGUSR2  # submitit asks SLURM for it (--signal=USR2@<signal_delay_s>)


def hand_over(signum: int, previous: Any) -> bool:
    """After `last.pt` is written, pass a requeue signal on to the handler that was there before ours
    (submitit's, which requeues the job and exits). False when there is none to pass it to."""
    if signum != REQUEUE_SIGNAL or not callable(previous):
        return False
    previous(signum, None)
    return True
