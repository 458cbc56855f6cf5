"""`python -m fewshot_exp.report <dir>...`: compare runs from their run dirs (no W&B needed).

Finds every Hydra run dir under the given dirs (a folder with `.hydra/config.yaml`), reads its
`results.json`, and builds a pandas table with one row per configuration (dataset, algorithm, distance,
n_way, k_shot, other swept keys). A configuration run with several seeds reports the mean over seeds with a
t-based 95% interval across seeds (`ci95`), the number of seeds, and the mean within-run episode interval
(`episode_ci95`); a single run reports its own episode interval. `--baseline key=value` adds, for every row
tested on the same episodes as its baseline row, the paired difference with its 95% interval and a paired
t-test's p-value (over episodes for single runs, over seeds otherwise); beside them, the best validation
accuracy, the training time and speed (timing.json) and the parameter count. Prints the table as markdown and
writes `report.md` (the table and its plots), `report.csv`, `acc_vs_shots.png` (one panel per dataset and
n_way, one line per algorithm, the CI as a band) and `curves.png` (training and validation curves from
metrics.jsonl) into `--out` (default: the first dir). Runs without results.json are listed as failed. An
`eval_only=true` run (a test-shot curve of one checkpoint) gives one row per (n_way, k_shot) it evaluated.
`--wandb` logs the table and the plots to W&B as a run of the sweep's group.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from scipy import stats  # noqa: E402

from fewshot_exp.errors import UserError  # noqa: E402
from fewshot_exp.run_files import CURVE_EPISODES_FILE, METRICS_FILE, TEST_EPISODES_FILE, TIMING_FILE  # noqa: E402

_OVERRIDES = OverridesParser.create()
KEYS = ["dataset", "algorithm", "distance", "n_way", "k_shot"]
RUN_VALUES = {"run_dir", "checkpoint", "seed", "acc", "ci95", "episodes", "lake_error", "val_best", "fingerprint",
              "per_episode", "wall_s", "episodes_per_s", "parameters"}  # fmt: skip
# the columns of the report that are results, not configuration
VALUES = ["acc", "ci95", "seeds", "episode_ci95", "episodes", "val_best", "lake_error", "lake_error_ci95",
          "episodes_fingerprint",
          "wall_s", "episodes_per_s", "parameters"]  # fmt: skip
PAIRED = ["vs_baseline", "diff", "diff_ci95", "p_value"]  # with --baseline
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
    "logger.init_timeout",
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
    try:
        results = json.loads(results_file.read_text())
        if not isinstance(results, dict) or not ("curve" in results or "test/acc" in results):
            raise ValueError("no test/acc")
    except ValueError as e:  # a file cut short or edited by hand: the run is listed as failed, the others reported
        return [{**row, "failed": f"unreadable results.json ({str(e).splitlines()[0]})"}]
    if "curve" in results:
        row = {**without(row, {"eval.k_shots", "eval.n_ways", "checkpoint"}), **curve_model(results["model"])}
        episodes = read_episodes(run_dir / CURVE_EPISODES_FILE)
        return [
            {**row, "n_way": p["n_way"], "k_shot": p["k_shot"], "acc": p["acc"], "ci95": p["ci95"],
             "episodes": p["episodes"], "lake_error": results.get("test/lake_error"), "val_best": None, "wall_s": None,
             "episodes_per_s": None, "parameters": None,
             "fingerprint": p.get("episodes_fingerprint"), "per_episode": point_accuracies(episodes, p)}
            for p in results["curve"]
        ]  # fmt: skip
    row.update(
        acc=results["test/acc"],
        ci95=results["test/acc_ci95"],
        episodes=results["test/episodes"],
        lake_error=results.get("test/lake_error"),
        val_best=results.get("val/best_acc"),
        parameters=results.get("model/parameters"),
        **training_speed(run_dir / TIMING_FILE),
        fingerprint=results.get("test/episodes_fingerprint"),
        per_episode=point_accuracies(read_episodes(run_dir / TEST_EPISODES_FILE)),
    )
    return [row]


def without(row: dict, keys: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def curve_model(model: dict) -> dict:
    """A shot curve's model as report columns: its dataset, algorithm and distance, its training shape and seed,
    and its training run's overrides as key columns (the checkpoint path is a value, so that curves of one
    configuration trained with several seeds are one row per shape)."""
    keys = {k: model[k] for k in ("dataset", "algorithm", "distance", "checkpoint") if k in model}
    trained = {k: model[k] for k in ("train_n_way", "train_k_shot", "seed") if k in model}
    swept = {k: v for k, v in (model.get("overrides") or {}).items() if k.lstrip("+~") not in NOT_SWEPT}
    return {**swept, **keys, **trained}


def training_speed(path: Path) -> dict[str, float | None]:
    """wall_s and episodes_per_s of a run's training on its machine (TIMING_FILE; None without it)."""
    timing = json.loads(path.read_text()) if path.is_file() else {}
    return {"wall_s": timing.get("train/wall_s"), "episodes_per_s": timing.get("train/episodes_per_s")}


def read_episodes(path: Path) -> pd.DataFrame | None:
    """A per-episode CSV (TEST_EPISODES_FILE, CURVE_EPISODES_FILE); None where the run has none."""
    return pd.read_csv(path) if path.is_file() else None


def point_accuracies(episodes: pd.DataFrame | None, point: dict | None = None) -> np.ndarray | None:
    """The accuracy of each episode in the order drawn: all rows, or a curve point's (its n_way and k_shot)."""
    if episodes is None:
        return None
    if point is not None:
        episodes = episodes[(episodes.n_way == point["n_way"]) & (episodes.k_shot == point["k_shot"])]
    return episodes.sort_values("episode")["acc"].to_numpy(dtype=float) if len(episodes) else None


def run_rows(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(one row per finished run or curve point, the failed runs, the key columns: what makes a configuration,
    KEYS and every other column that varies)."""
    rows = pd.DataFrame([row for r in find_runs(dirs) for row in read_run(r)])
    if rows.empty:
        return rows, rows, KEYS
    failed = rows[rows["failed"].notna()] if "failed" in rows else rows.iloc[:0]
    done = rows[rows["failed"].isna()] if "failed" in rows else rows
    extra = [c for c in done.columns if c not in {*KEYS, *RUN_VALUES, "failed"} and done[c].nunique(dropna=False) > 1]
    return done.fillna({c: "-" for c in extra}), failed, KEYS + extra


def t_ci95(values: np.ndarray) -> float:
    """Half-width t_{0.975, n-1} * s / sqrt(n) of the t-based 95% interval of the mean of n values."""
    n = len(values)
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def seed_accuracies(runs: pd.DataFrame) -> pd.Series:
    """One test accuracy per seed (runs that share a seed are averaged), indexed by seed."""
    return runs.groupby("seed")["acc"].mean()


def fingerprints(runs: pd.DataFrame) -> set[str] | None:
    """The runs' test-episode fingerprints; None if one lacks it (a run that predates them)."""
    prints = runs["fingerprint"]
    return set(prints) if prints.notna().all() else None


def common_fingerprint(runs: pd.DataFrame) -> str | None:
    """The test-episode fingerprint all the runs share; None if one lacks it or they differ."""
    prints = fingerprints(runs)
    return next(iter(prints)) if prints is not None and len(prints) == 1 else None


def summary(runs: pd.DataFrame) -> dict:
    """A configuration's numbers: the mean over seeds, with the across-seed t interval when there are several
    seeds and the run's episode interval otherwise, and beside them the mean episode interval of its runs; the
    Omniglot one-shot runs error likewise, its interval over seeds (none for one seed: its 200 test items are
    the Lake runs' own)."""
    per_seed = seed_accuracies(runs)
    episode_ci95 = float(runs["ci95"].mean())
    lake = pd.to_numeric(runs["lake_error"]).groupby(runs["seed"]).mean().dropna()  # one error per seed
    return {
        "acc": float(per_seed.mean()),
        "ci95": t_ci95(per_seed.to_numpy()) if len(per_seed) > 1 else episode_ci95,
        "seeds": len(per_seed),
        "episode_ci95": episode_ci95,
        "episodes": runs["episodes"].iloc[0],
        "val_best": pd.to_numeric(runs["val_best"]).mean(),
        "wall_s": pd.to_numeric(runs["wall_s"]).mean(),
        "episodes_per_s": pd.to_numeric(runs["episodes_per_s"]).mean(),
        "parameters": pd.to_numeric(runs["parameters"]).max(),
        "lake_error": lake.mean(),
        "lake_error_ci95": t_ci95(lake.to_numpy()),
        "episodes_fingerprint": common_fingerprint(runs),
    }


def runs_table(dirs: list[Path], baseline: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per configuration, its seeds summarised (`summary`), with the paired comparison to `baseline`'s
    rows when given; the failed runs)."""
    done, failed, keys = run_rows(dirs)
    if done.empty:
        return done, failed
    groups = {key: runs for key, runs in done.groupby(keys, sort=True)}
    table = pd.DataFrame([{**dict(zip(keys, key)), **summary(runs)} for key, runs in groups.items()])
    for column in ("val_best", "lake_error", "lake_error_ci95", "episodes_fingerprint", "wall_s", "episodes_per_s",
                   "parameters"):  # fmt: skip
        if table[column].isna().all():
            table = table.drop(columns=column)
    if baseline:
        table = compare(table, list(groups.values()), keys, baseline_selection(table, keys, baseline))
    return table, failed


def baseline_selection(table: pd.DataFrame, keys: list[str], pairs: list[str]) -> dict[str, str]:
    """`--baseline key=value` pairs as {key: value}; a UserError unless each key is a key column and together
    they pick at least one row."""
    selection = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in keys:
            raise UserError(f"--baseline {pair}: give key=value with a key column of the report: {', '.join(keys)}")
        selection[key] = value
    if not is_baseline(table, selection).any():
        seen = "; ".join(f"{k} has {', '.join(sorted(table[k].astype(str).unique()))}" for k in selection)
        raise UserError(f"--baseline {' '.join(pairs)} names no row of the report ({seen})")
    return selection


def override_value(text: object) -> object:
    """A key column's value as Hydra parses it on the command line: a sweep's jobs record `true` as `True` and
    `1e-3` as `0.001`, and `--baseline key=true` or `key=1e-3` still names them."""
    try:
        return _OVERRIDES.parse_override(f"key={text}").value()
    except HydraException:
        return str(text)


def is_baseline(table: pd.DataFrame, selection: dict[str, str]) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for key, value in selection.items():
        mask &= table[key].map(override_value) == override_value(value)
    return mask


def compare(table: pd.DataFrame, runs: list[pd.DataFrame], keys: list[str], selection: dict[str, str]) -> pd.DataFrame:
    """The table with PAIRED columns: each row against the baseline row equal to it in every key but the
    baseline keys (`runs[i]` are row i's runs)."""
    others = [k for k in keys if k not in selection]
    baseline_rows = table.index[is_baseline(table, selection)]
    by_config = {tuple(table.loc[i, others].astype(str)): i for i in baseline_rows}
    paired = []
    for i in table.index:
        base = by_config.get(tuple(table.loc[i, others].astype(str)))
        if i in baseline_rows:
            paired.append({"vs_baseline": "baseline"})
        elif base is None:
            paired.append({"vs_baseline": "no baseline row"})
        else:
            paired.append(paired_difference(runs[i], runs[base]))
    return pd.concat([table, pd.DataFrame(paired, index=table.index).reindex(columns=PAIRED)], axis=1)


def paired_difference(runs: pd.DataFrame, baseline: pd.DataFrame) -> dict:
    """Accuracy of `runs` minus `baseline`'s, paired, if both were tested on the same episodes: by episode when
    each is a single seed, else by seed (each seed's test accuracy) over the seeds they share."""
    ours, theirs = fingerprints(runs), fingerprints(baseline)
    if ours is None or theirs is None:
        return {"vs_baseline": "episodes unknown"}
    if len(ours | theirs) > 1:
        return {"vs_baseline": "episodes differ"}
    if runs["seed"].nunique() == 1 and baseline["seed"].nunique() == 1:
        a, b = episode_accuracies(runs), episode_accuracies(baseline)
        if a is None or b is None:
            return {"vs_baseline": "no per-episode results"}
        return paired_test(a, b, "episodes")
    a, b = seed_accuracies(runs), seed_accuracies(baseline)
    shared = a.index.intersection(b.index)
    if len(shared) < 2:
        return {"vs_baseline": "fewer than 2 shared seeds"}
    return paired_test(a[shared].to_numpy(), b[shared].to_numpy(), "seeds")


def episode_accuracies(runs: pd.DataFrame) -> np.ndarray | None:
    """Per-episode test accuracies of one seed's runs (averaged over its runs); None if one has none."""
    arrays = list(runs["per_episode"])
    if any(a is None or (isinstance(a, float) and math.isnan(a)) for a in arrays):
        return None
    return np.mean(np.stack(arrays), axis=0)


def paired_test(a: np.ndarray, b: np.ndarray, over: str) -> dict:
    """Mean difference a - b, its t-based 95% half-width, and the two-sided p-value of a paired t-test."""
    with warnings.catch_warnings():  # zero variance (identical accuracies) gives an undefined p-value: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_rel(a, b).pvalue)
    d = a - b
    return {"vs_baseline": f"paired over {len(d)} {over}", "diff": float(d.mean()), "diff_ci95": t_ci95(d),
            "p_value": p_value}  # fmt: skip


def percent(value: float, sign: str = "") -> str:
    return "" if pd.isna(value) else f"{100 * value:{sign}.2f}"


def blank_nan(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), None)  # None prints as an empty cell


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown, accuracies in percent: `test acc (%)` is acc ± ci95, `diff (%)` diff ± diff_ci95;
    the fingerprint is left to the CSV."""
    shown = table[[c for c in table.columns if c not in {*VALUES, *PAIRED}]].copy()
    shown["test acc (%)"] = [f"{percent(a)} ± {percent(c)}" for a, c in zip(table.acc, table.ci95)]
    shown["seeds"] = table.seeds
    shown["episode ci95 (%)"] = 100 * table.episode_ci95
    shown["episodes"] = table.episodes
    if "val_best" in table:
        shown["val best (%)"] = blank_nan(100 * table.val_best)
    if "lake_error" in table:
        shown["lake_error (%)"] = [
            "" if pd.isna(e) else f"{e:.2f}" + ("" if pd.isna(c) else f" ± {c:.2f}")
            for e, c in zip(table.lake_error, table.get("lake_error_ci95", pd.Series(math.nan, table.index)))
        ]
    if "wall_s" in table:
        shown["train wall (s)"] = blank_nan(table.wall_s)
        shown["train ep/s"] = blank_nan(table.episodes_per_s)
    if "parameters" in table:
        shown["parameters"] = blank_nan(table.parameters)
    if "diff" in table:
        shown["diff (%)"] = [
            f"{percent(d, '+')} ± {percent(c)}" if pd.notna(d) else "" for d, c in zip(table["diff"], table.diff_ci95)
        ]
        shown["p"] = blank_nan(table.p_value)
        shown["vs_baseline"] = table.vs_baseline
    formats = {"episode ci95 (%)": ".2f", "val best (%)": ".2f", "p": ".3g", "train wall (s)": ".0f",
               "train ep/s": ".1f", "parameters": ".0f"}  # fmt: skip
    return shown.to_markdown(index=False, floatfmt=[formats.get(c, "g") for c in shown.columns], missingval="")


def plot_acc_vs_shots(table: pd.DataFrame, path: Path) -> None:
    panels = list(table.groupby(["dataset", "n_way"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    label_keys = [c for c in table.columns if c not in {"dataset", "n_way", "k_shot", *VALUES, *PAIRED}]
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
        shots = sorted(panel.k_shot.unique())
        ax.set_xticks(shots, [str(k) for k in shots])  # the shots themselves, not powers of 2
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """A run's metrics.jsonl as one row per step (training and validation rows merged); empty without it."""
    path = run_dir / METRICS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    rows = [r for r in rows if isinstance(r, dict) and "step" in r and not any(k.startswith("test/") for k in r)]
    return pd.DataFrame(rows).groupby("step").first() if rows else pd.DataFrame()


CURVES = [("train/loss", "training loss"), ("train/acc", "training accuracy"), ("val/acc", "validation accuracy")]


def plot_training_curves(done: pd.DataFrame, keys: list[str], path: Path) -> bool:
    """Training loss, training accuracy and validation accuracy against episodes, one line per configuration (its
    seeds averaged step by step); False, and no file, when no run has metrics."""
    varying = [k for k in keys if done[k].nunique() > 1] or keys[:2]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4), squeeze=False)
    drawn = False
    for config, runs in done.groupby(varying, sort=True):
        metrics = [read_metrics(Path(d)) for d in runs["run_dir"]]
        metrics = [m for m in metrics if not m.empty]
        if not metrics:
            continue
        mean = pd.concat(metrics).groupby(level=0).mean(numeric_only=True)
        values = config if isinstance(config, tuple) else (config,)
        label = ", ".join(str(v) if k in ("algorithm", "distance") else f"{k}={v}" for k, v in zip(varying, values))
        for ax, (column, _) in zip(axes[0], CURVES):
            if column in mean:
                points = mean[column].dropna()
                ax.plot(points.index, points.values, marker="o" if column.startswith("val/") else None, label=label)
                drawn = True
    for ax, (_, title) in zip(axes[0], CURVES):
        ax.set(title=title, xlabel="training episode")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if drawn:
        axes[0][0].legend(fontsize="small")
        fig.savefig(path, dpi=120)
    else:
        path.unlink(missing_ok=True)  # not an earlier report's curves
    plt.close(fig)
    return drawn


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
    table: pd.DataFrame, figures: dict[str, Path], out: Path, group: str, project: str, entity: str | None
) -> str | None:
    """The table and the plots as a W&B run of job type `report` in the runs' group; returns its id."""
    from types import SimpleNamespace

    from fewshot_exp.config import LoggerConfig
    from fewshot_exp.tracking import Tracker

    mode, timeout = SimpleNamespace(value="auto"), LoggerConfig.init_timeout
    logger = SimpleNamespace(name="wandb", project=project, entity=entity, mode=mode, init_timeout=timeout)
    tracker = Tracker(out, logger, name=f"report:{group}", group=group, tags=["report"], job_type="report")
    tracker.log_table("report/table", table, step=0)
    if figures:
        tracker.log_images({f"report/{path.stem}": path for path in figures.values()}, step=0)
    run_id = tracker.run_id
    tracker.finish()
    return run_id


def draw_figures(table: pd.DataFrame, dirs: list[Path], out: Path) -> dict[str, Path]:
    """The report's plots in `out`, by title: accuracy against shots, and the training curves where runs have
    metrics."""
    if table.empty:
        return {}
    figures = {"test accuracy against shots": out / "acc_vs_shots.png"}
    plot_acc_vs_shots(table, figures["test accuracy against shots"])
    done, _, keys = run_rows(dirs)
    if plot_training_curves(done, keys, out / "curves.png"):
        figures["training curves"] = out / "curves.png"
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run dirs or sweep dirs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md/.csv/.png (default: the first dir)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plot to W&B (the runs' group)")
    parser.add_argument("--group", help="W&B group for --wandb (default: the runs' group)")
    parser.add_argument("--project", help="W&B project for --wandb (default: the runs' logger.project)")
    parser.add_argument("--entity", help="W&B entity for --wandb (default: the runs' logger.entity)")
    parser.add_argument(
        "--baseline",
        action="append",
        metavar="KEY=VALUE",
        help="the baseline rows, e.g. algorithm=protonet (a key column; repeat to AND several): adds each row's "
        "paired difference from its baseline row with a 95%% interval and p-value",
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        parser.exit(2, f"error: not a directory: {', '.join(missing)}\n")
    out = args.out or args.dirs[0]
    if out.exists() and not out.is_dir():
        parser.exit(2, f"error: --out {out} is a file; give a directory for report.md, report.csv and the plots\n")
    try:
        table, failed = runs_table(args.dirs, args.baseline)
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    if table.empty and failed.empty:
        parser.exit(2, f"error: no run dirs (with .hydra/config.yaml) under {', '.join(map(str, args.dirs))}\n")
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table) if not table.empty else "(no finished runs)"
    if not failed.empty:
        text += "\n\nFailed runs:\n" + "\n".join(f"- {r.run_dir}: {r.failed}" for r in failed.itertuples())
    print(text)
    table.to_csv(out / "report.csv", index=False)
    figures = draw_figures(table, args.dirs, out)
    figure_links = [f"![{title}]({path.name})" for title, path in figures.items()]
    (out / "report.md").write_text("\n\n".join([text, *figure_links]) + "\n")
    if args.wandb:
        group, project, entity = wandb_place(args.dirs)
        run_id = to_wandb(table, figures, out, args.group or group, args.project or project, args.entity or entity)
        print(f"W&B: report run {run_id}" if run_id else "W&B: not logged (see the warning above)")
    return 1 if not failed.empty else 0


if __name__ == "__main__":
    raise SystemExit(main())
