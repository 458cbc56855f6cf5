"""The reference tutorial's comparison on the default data: ProtoNet, MAML and ProtoMAML trained at 5-way 4-shot,
each evaluated at 2, 4, 8, 16 and 32 shots on the same test episodes, and the report's table of each against
ProtoNet at each shot. `python -m benchmarks.results_page --run OUT --only tutorial` runs it into OUT/tutorial
(`run`), and the results page shows it.

The steps are plain commands of the tool (`steps`), which the docs list for anyone to type: one training run per
algorithm, one `eval_only=true` sweep over the three checkpoints, one report.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.provenance import hardware, now, record

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = ["protonet", "maml", "protomaml"]
TRAIN_SHOT = 4
SHOTS = [2, 4, 8, 16, 32]
EVAL_EPISODES = 500  # per shot: the fine-tuning learners' 32-shot points cost minutes per hundred episodes on a CPU
INFO = "tutorial.json"  # the commands run, with their wall times, commit, date and machine
FIGURE = "tutorial_acc_vs_shots.png"  # the report's plot, copied into docs/img


def steps(out: Path, extra: list[str]) -> list[tuple[str, list[str]]]:
    """(name, argv of `python`) of each step, into `out`; `extra` overrides go to every fewshot_exp command."""
    train, curves = out / "train", out / "curves"
    trained = [
        (f"train {a}", ["-m", "fewshot_exp", f"algorithm={a}", f"episode.k_shot={TRAIN_SHOT}", *extra,
                        f"hydra.run.dir={train / a}"])
        for a in ALGORITHMS
    ]  # fmt: skip
    evaluate = [
        "-m", "fewshot_exp", "-m", "eval_only=true", "checkpoint=" + ",".join(str(train / a) for a in ALGORITHMS),
        f"eval.k_shots=[{','.join(map(str, SHOTS))}]", f"eval.episodes={EVAL_EPISODES}", *extra,
        f"hydra.sweep.dir={curves}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]  # fmt: skip
    report = ["-m", "fewshot_exp.report", str(curves), "--baseline", "algorithm=protonet", "--out", str(out / "report")]
    return [*trained, ("evaluate", evaluate), ("report", report)]


def done(name: str, out: Path) -> bool:
    """Whether a step's outputs are there already (a rerun skips it)."""
    if name.startswith("train "):
        return (out / "train" / name.split()[1] / "results.json").is_file()
    if name == "evaluate":
        return len(list((out / "curves").glob("*/results.json"))) == len(ALGORITHMS)
    return False  # the report is cheap: always written again


def run(out: Path, extra: list[str], page_argv: list[str]) -> int:
    """Run the steps not done yet into `out`, one after another, recording each one's command and wall time in
    out/INFO; returns 0, or the exit status of the step that failed."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((out / INFO).read_text()) if (out / INFO).is_file() else {}
    info.setdefault("steps", {})
    for name, argv in steps(out, extra):
        if done(name, out):
            print(f"tutorial: {name}: done already, skipped", flush=True)
            continue
        stopped = name.startswith("train ") and (out / "train" / name.split()[1] / "last.pt").is_file()
        resume = ["resume=true"] if stopped else []
        entry = record("benchmarks.results_page", page_argv, hardware("cpu"))
        entry |= {"step_command": shlex.join(["python", *argv, *resume]), "resumed": bool(resume)}
        print(f"tutorial: {name}: {entry['step_command']}", flush=True)
        began = time.perf_counter()
        status = subprocess.run([sys.executable, *argv, *resume], cwd=REPO, check=False).returncode
        entry |= {"finished": now(), "wall_s": time.perf_counter() - began, "returncode": status}
        info["steps"][name] = entry
        (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
        if status != 0:
            return status
    return 0
