"""`python -m fewshot_exp.report <dir>...`: compare runs from their run dirs (no W&B needed).

Finds every Hydra run dir under the given dirs (a folder with `.hydra/config.yaml`), reads its
`results.json`, and builds a pandas table of test accuracy ± 95% CI per (dataset, algorithm,
distance, n_way, k_shot, other swept keys). Runs that differ only in `seed` are averaged (the CI
column is then the mean of their CIs and `runs` counts them). Prints the table as markdown and
writes `report.md`, `report.csv` and `acc_vs_shots.png` (one panel per dataset and n_way, one line
per algorithm, the CI as a band) into `--out` (default: the first dir). Runs without results.json
are listed as failed. An `eval_only=true` run (a test-shot curve of one checkpoint) gives one row per
(n_way, k_shot) it evaluated. `--wandb` logs the table and the plot to W&B as a run of the sweep's group.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

KEYS = ["dataset", "algorithm", "distance", "n_way", "k_shot"]
NOT_SWEPT = {
    "seed",
    "device",
    "dataset",
    "algorithm",
    "distance",
    "episode",
    "episode.n_way",
    "episode.k_shot",
    "dataset.root",
    "eval.lake_runs",
    "logger",
    "logger.mode",
    "eval_only",
    "resume",  # a resumed run is the same run
}


def find_runs(dirs: list[Path]) -> list[Path]:
    return sorted({p.parent.parent for d in dirs for p in Path(d).rglob(".hydra/config.yaml")})


def read_run(run_dir: Path) -> list[dict]:
    """The run's rows: one for a trained run (or a failed one), one per point for an eval_only shot curve."""
    hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    choices = hydra.runtime.choices
    overrides = dict(o.split("=", 1) for o in hydra.overrides.task if "=" in o and not o.startswith("hydra"))
    row = {
        "run_dir": str(run_dir),
        "dataset": choices.dataset,
        "algorithm": choices.algorithm,
        "distance": choices.distance,
        "n_way": cfg.episode.n_way,
        "k_shot": cfg.episode.k_shot,
        "seed": cfg.seed,
        **{k: v for k, v in overrides.items() if k.lstrip("+~") not in NOT_SWEPT},
    }
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        error = run_dir / "error.txt"
        message = error.read_text().strip().splitlines() if error.is_file() else []
        return [{**row, "failed": message[0] if message else "no results.json"}]  # the message, not the traceback
    results = json.loads(results_file.read_text())
    if "curve" in results:  # the model is the checkpoint's: its dataset, algorithm and training shape
        model = {k: v for k, v in results["model"].items() if k in ("dataset", "algorithm", "distance", "checkpoint")}
        row = {k: v for k, v in row.items() if k not in ("eval.k_shots", "eval.n_ways", "checkpoint")}
        return [
            {**row, **model, "n_way": p["n_way"], "k_shot": p["k_shot"], "acc": p["acc"], "ci95": p["ci95"],
             "episodes": p["episodes"], "lake_error": None}
            for p in results["curve"]
        ]  # fmt: skip
    row.update(
        acc=results["test/acc"],
        ci95=results["test/acc_ci95"],
        episodes=results["test/episodes"],
        lake_error=results.get("test/lake_error"),
    )
    return [row]


def runs_table(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per configuration, averaged over seeds; the failed runs)."""
    rows = pd.DataFrame([row for r in find_runs(dirs) for row in read_run(r)])
    if rows.empty:
        return rows, rows
    failed = rows[rows["failed"].notna()] if "failed" in rows else rows.iloc[:0]
    done = rows[rows["failed"].isna()] if "failed" in rows else rows
    if done.empty:
        return done, failed
    extra = [
        c
        for c in done.columns
        if c not in {*KEYS, "run_dir", "seed", "acc", "ci95", "episodes", "lake_error", "failed"}
        and done[c].nunique(dropna=False) > 1
    ]
    keys = KEYS + extra
    table = (
        done.fillna({c: "-" for c in extra})
        .groupby(keys, as_index=False)
        .agg(
            acc=("acc", "mean"),
            ci95=("ci95", "mean"),
            episodes=("episodes", "first"),
            runs=("acc", "size"),
            lake_error=("lake_error", "mean"),
        )
        .sort_values(keys)
    )
    if table["lake_error"].isna().all():
        table = table.drop(columns="lake_error")
    return table.reset_index(drop=True), failed


def markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["test acc (%)"] = [f"{100 * a:.2f} ± {100 * c:.2f}" for a, c in zip(shown.pop("acc"), shown.pop("ci95"))]
    return shown.to_markdown(index=False)


def plot_acc_vs_shots(table: pd.DataFrame, path: Path) -> None:
    panels = list(table.groupby(["dataset", "n_way"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    label_keys = [
        c
        for c in table.columns
        if c not in {"dataset", "n_way", "k_shot", "acc", "ci95", "episodes", "runs", "lake_error"}
    ]
    for ax, ((dataset, n_way), panel) in zip(axes[0], panels):
        for label, line in panel.groupby(label_keys):
            line = line.sort_values("k_shot")
            values = label if isinstance(label, tuple) else (label,)
            name = ", ".join(
                str(v) if k in ("algorithm", "distance") else f"{k}={v}" for k, v in zip(label_keys, values)
            )
            ax.errorbar(line.k_shot, 100 * line.acc, yerr=100 * line.ci95, marker="o", capsize=3, label=name)
            ax.fill_between(line.k_shot, 100 * (line.acc - line.ci95), 100 * (line.acc + line.ci95), alpha=0.2)
        ax.set(title=f"{dataset}, {n_way}-way", xlabel="k_shot (support images per class)", ylabel="test accuracy (%)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def wandb_place(dirs: list[Path]) -> tuple[str, str, str | None]:
    """(group, project, entity) of the first run, as `python -m fewshot_exp` chose them: `logger.group`, else the
    name of the sweep dir a multirun job is in, else `experiment_name`; with no run, the dir's name and the defaults."""
    runs = find_runs(dirs)
    if not runs:
        return Path(dirs[0]).resolve().name, "fewshot-exp", None
    cfg = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
    hydra = OmegaConf.load(runs[0] / ".hydra" / "hydra.yaml").hydra
    logger = cfg.get("logger") or {}
    # a multirun job's dir sits in its sweep dir; hydra.yaml keeps hydra.sweep.dir unresolved (${now:...})
    multirun = str(hydra.get("mode")) == "MULTIRUN"
    group = logger.get("group") or (runs[0].parent.name if multirun else cfg.get("experiment_name"))
    return str(group or Path(dirs[0]).resolve().name), logger.get("project") or "fewshot-exp", logger.get("entity")


def to_wandb(
    table: pd.DataFrame, plot: Path | None, out: Path, group: str, project: str, entity: str | None
) -> str | None:
    """The table and the plot as a W&B run of job type `report` in the runs' group; returns its id."""
    from types import SimpleNamespace

    from fewshot_exp.tracking import Tracker

    logger = SimpleNamespace(name="wandb", project=project, entity=entity, mode=SimpleNamespace(value="auto"))
    tracker = Tracker(out, logger, name=f"report:{group}", group=group, tags=["report"], job_type="report")
    tracker.log_table("report/table", table, step=0)
    if plot is not None:
        tracker.log_images({"report/acc_vs_shots": plot}, step=0)
    run_id = tracker.run_id
    tracker.finish()
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or sweep dirs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md/.csv/.png (default: the first dir)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plot to W&B (the runs' group)")
    parser.add_argument("--group", help="W&B group for --wandb (default: the runs' group)")
    parser.add_argument("--project", help="W&B project for --wandb (default: the runs' logger.project)")
    parser.add_argument("--entity", help="W&B entity for --wandb (default: the runs' logger.entity)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        parser.exit(2, f"error: not a directory: {', '.join(missing)}\n")
    table, failed = runs_table(args.dirs)
    if table.empty and failed.empty:
        parser.exit(2, f"error: no run dirs (with .hydra/config.yaml) under {', '.join(map(str, args.dirs))}\n")
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table) if not table.empty else "(no finished runs)"
    if not failed.empty:
        text += "\n\nFailed runs:\n" + "\n".join(f"- {r.run_dir}: {r.failed}" for r in failed.itertuples())
    print(text)
    (out / "report.md").write_text(text + "\n")
    table.to_csv(out / "report.csv", index=False)
    plot = out / "acc_vs_shots.png" if not table.empty else None
    if plot is not None:
        plot_acc_vs_shots(table, plot)
    if args.wandb:
        group, project, entity = wandb_place(args.dirs)
        run_id = to_wandb(table, plot, out, args.group or group, args.project or project, args.entity or entity)
        print(f"W&B: report run {run_id}" if run_id else "W&B: not logged (see the warning above)")
    return 1 if not failed.empty else 0


if __name__ == "__main__":
    raise SystemExit(main())
