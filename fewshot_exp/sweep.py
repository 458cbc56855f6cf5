"""Failure isolation for `-m` sweeps.

A job that fails (bad combination, diverged loss, crash) writes `error.txt` into its own run dir and
appends a line to `<sweep dir>/failed_jobs.jsonl`, then returns, so the other jobs still run. When
the sweep ends, the `SweepSummary` Hydra callback (registered in conf/config.yaml) writes
`<sweep dir>/sweep_summary.json` and keeps a one-line message naming the failed jobs in
`failure_message`, which the CLI prints as `error: ...` before exiting with code 1.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

FAILED_JOBS = "failed_jobs.jsonl"


failure_message: str | None = None  # set in the launching process when a sweep ends with failed jobs


def record_failure(run_dir: Path, sweep_dir: Path, job: str, error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    (run_dir / "error.txt").write_text(message + "\n\n" + "".join(traceback.format_exception(error)))
    with open(sweep_dir / FAILED_JOBS, "a") as f:
        f.write(json.dumps({"job": job, "run_dir": str(run_dir), "error": message}) + "\n")


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures_file = sweep_dir / FAILED_JOBS
        failures = (
            [json.loads(line) for line in failures_file.read_text().splitlines()] if failures_file.exists() else []
        )
        # rglob: a job dir named by an override holding a `/` is nested, not lost from the count
        jobs = sorted(str(p.parent.parent.resolve()) for p in sweep_dir.rglob(".hydra/config.yaml"))
        finished = [job for job in jobs if (Path(job) / "results.json").is_file()]
        summary = {"jobs": len(jobs), "finished": len(finished), "finished_runs": finished, "failed": failures}
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if failures:
            global failure_message
            names = "; ".join(f"{f['job'] or Path(f['run_dir']).name} ({f['error']})" for f in failures)
            failure_message = (
                f"{len(failures)} of {len(jobs)} jobs failed: {names}. Each has error.txt in its run "
                f"dir; see {sweep_dir / 'sweep_summary.json'}"
            )
