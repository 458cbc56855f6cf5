"""What the encoder's memory layout does to what is learned: each algorithm trained and tested on the default data
with `encoder.channels_last=true` (the default) and `false`, on the same seeds, and the report's paired comparison.

    python -m benchmarks.channels_last [--out outputs/channels_last] [--episodes 300] [--seeds 3]
        [--json benchmarks/channels_last.json]

Each setting of `SETTINGS` is one sweep of the tool, `python -m fewshot_exp -m <setting> <common(episodes)>
seed=0,...,S-1 encoder.channels_last=true,false hydra.sweep.dir=OUT/<setting>`, run one after another (a setting
whose sweep dir holds every job's results.json is skipped). Both layouts of a seed start from the same weights and
draw the same training episodes, and every run is tested on the same test episodes (`eval.seed`), so the
difference of a seed's two runs is what the layout did through float32 rounding. The table is the report's
(`fewshot_exp.report.runs_table` with `--baseline encoder.channels_last=false`): the mean test accuracy over seeds
with its t interval, and the difference on − off paired over seeds. Beside it, the training speed of each layout
(episodes per second, the mean over seeds, from each run's timing.json) and their ratio. `python -m
benchmarks.docs_page` puts the JSON on docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.provenance import hardware, now, record
from fewshot_exp.report import override_value, runs_table

REPO = Path(__file__).resolve().parents[1]

#: name -> (what it is, its overrides): the algorithms whose float32 arithmetic the layout changes most
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "protonet": ("ProtoNet", ["algorithm=protonet"]),
    "maml_1step": ("MAML, 1 inner step", ["algorithm=maml"]),
    "maml_5step": (
        "MAML, 5 inner steps",
        ["algorithm=maml", "algorithm.inner_steps=5", "algorithm.test_inner_steps=5"],
    ),
    "protomaml": ("ProtoMAML", ["algorithm=protomaml"]),
    "reptile": ("Reptile", ["algorithm=reptile"]),
}
LAYOUT = "encoder.channels_last"
BASELINE = f"{LAYOUT}=false"


def common(episodes: int) -> list[str]:
    """The overrides of every run: `episodes` training episodes (the learning rate halved half-way, validated
    twice), 300 test episodes, no W&B."""
    return [f"train.episodes={episodes}", f"train.lr_step={max(1, episodes // 2)}",
            f"train.val_every={max(1, episodes // 2)}", "train.val_episodes=100", "eval.episodes=300",
            "logger=none"]  # fmt: skip


def sweep_argv(name: str, out: Path, episodes: int, seeds: int) -> list[str]:
    """The argv of `python` for one setting's sweep into out/<name>."""
    seed_list = ",".join(str(s) for s in range(seeds))
    return ["-m", "fewshot_exp", "-m", *SETTINGS[name][1], *common(episodes), f"seed={seed_list}",
            f"{LAYOUT}=true,false", f"hydra.sweep.dir={out / name}", "hydra.sweep.subdir=${hydra.job.num}"]  # fmt: skip


def finished(name: str, out: Path, seeds: int) -> bool:
    return len(list((out / name).glob("*/results.json"))) == 2 * seeds


def run(out: Path, episodes: int, seeds: int) -> dict[str, dict[str, Any]]:
    """Run each setting's sweep not finished yet; per setting, its command and wall time (None when skipped)."""
    steps = {}
    for name in SETTINGS:
        argv = sweep_argv(name, out, episodes, seeds)
        steps[name] = {"command": shlex.join(["python", *argv]), "wall_s": None}
        if finished(name, out, seeds):
            print(f"channels_last: {name}: finished already, skipped", flush=True)
            continue
        print(f"channels_last: {name}: {steps[name]['command']}", flush=True)
        began = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=REPO, check=True)
        steps[name]["wall_s"] = time.perf_counter() - began
    return steps


def number(value: Any) -> float | None:
    """A float, or None for a missing value (NaN)."""
    return None if value is None or value != value else float(value)


def setting_row(name: str, out: Path) -> dict[str, Any]:
    """The report's two rows of one setting (off, the baseline, and on) as one row of the JSON."""
    table, failed = runs_table([out / name], baseline=[BASELINE])
    if not failed.empty or len(table) != 2:
        raise SystemExit(f"channels_last: {out / name} lacks finished runs of both layouts ({len(failed)} failed)")
    layout = table[LAYOUT].map(override_value)
    off, on = table[layout == False].iloc[0], table[layout == True].iloc[0]  # noqa: E712 (a pandas mask)
    return {
        "what": SETTINGS[name][0],
        "seeds": int(on["seeds"]),
        "episodes": int(on["episodes"]),
        **{f"{layout}_{key}": number(row[key]) for layout, row in (("off", off), ("on", on))
           for key in ("acc", "ci95", "episodes_per_s")},
        "diff": number(on["diff"]),
        "diff_ci95": number(on["diff_ci95"]),
        "p_value": number(on["p_value"]),
        "paired": on["vs_baseline"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "channels_last", help="the sweeps' dirs")
    parser.add_argument("--episodes", type=int, default=300, help="training episodes of each run")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per layout")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "channels_last.json")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: the comparison is paired over seeds")
    out = args.out.resolve()
    report = record("benchmarks.channels_last", sys.argv[1:] if argv is None else argv, hardware("cpu"))
    report["steps"] = run(out, args.episodes, args.seeds)
    report |= {"finished": now(), "common": common(args.episodes), "rows": {n: setting_row(n, out) for n in SETTINGS}}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
