"""The Omniglot "minimal" section of the results page: `experiment=omniglot_minimal` on the official 20-way
within-alphabet one-shot runs, over seeds, beside the published numbers, and its ablation.

`python -m benchmarks.results_page --run OUT --only omniglot --omniglot DIR` runs every entry of `RUNS` into
OUT/omniglot/<name>/seed<k> (the preset first), one after another, each as a plain command of the tool; the page
then shows the report's numbers (`fewshot_exp.report`) for each entry. Each other entry changes one thing against
the preset (its own models tested without views, one model instead of the ensemble, or the other small background
set), so its row against the preset's is what that one thing does; other settings tried against it are read from
OUT/omniglot_tuning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tabulate import tabulate

from benchmarks.provenance import duration
from fewshot_exp.config import Config, flat
from fewshot_exp.report import runs_table, t_ci95

PRESET = ["experiment=omniglot_minimal", "dataset.root={omniglot}"]
SEEDS = (0, 1, 2)
RUN_DIR = "{run}"  # in an override: the results page's run dir (OUT)
#: name -> (what it is, the overrides it adds to PRESET, its seeds); an entry with `checkpoint=` evaluates the
#: preset's own model of that seed again (eval_only), so its row against the preset's is the same weights
RUNS: dict[str, tuple[str, list[str], tuple[int, ...]]] = {
    "preset": ("the preset", [], SEEDS),
    "no_tta": ("the preset's models tested without test-time views", ["eval_only=true", "eval.tta=0",
               "checkpoint={run}/omniglot/preset/seed{seed}"], SEEDS),
    "one_model": ("one ProtoNet instead of the ensemble (`algorithm.members=1`), with the same test-time views",
                  ["algorithm.members=1"], SEEDS),
    "small2": ("the preset trained on `images_background_small2`, validated on its last 2 alphabets (its last one "
               "has 17 characters, too few for 20-way episodes)", ["dataset.background=small2",
               "dataset.val_alphabets=2"], (0,)),
}  # fmt: skip
#: (method, error on small1, error on small2): Lake, Salakhutdinov & Tenenbaum 2015 (Science), the "minimal"
#: condition trained on the small background sets; people were tested on the runs without any such training
PUBLISHED = [
    ("People (Lake et al. 2015)", "4.5%", "4.5%"),
    ("Bayesian program learning (Lake et al. 2015)", "4.3%", "4.0%"),
    ("Deep convolutional network (Lake et al. 2015)", "24.0%", "22.3%"),
]
FOLDER = "omniglot"
TUNING = "omniglot_tuning"  # other settings tried against the preset, each <name>/<seed dir>, read as they are


def overrides_of(extra: list[str], seed: int, out: Path) -> list[str]:
    """An entry's command-line overrides for `seed`, its run dir placeholders filled in (an eval_only entry takes
    the seed of the model it reads)."""
    filled = [o.replace(RUN_DIR, str(out.resolve())).replace("{seed}", str(seed)) for o in extra]
    return [*PRESET, *filled] if "eval_only=true" in extra else [*PRESET, *filled, f"seed={seed}"]


def jobs(out: Path) -> list[tuple[str, list[str]]]:
    """(run name under `out`, overrides) of every run, in the order of `RUNS`: the preset's seeds first."""
    return [(f"{FOLDER}/{name}/seed{seed}", overrides_of(extra, seed, out))
            for name, (_, extra, seeds) in RUNS.items() for seed in seeds]  # fmt: skip


def error(row: pd.Series) -> str:
    ci = row.get("lake_error_ci95")
    seeds = int(row["seeds"])
    interval = f" ± {ci:.2f}" if pd.notna(ci) else ""
    return f"{row['lake_error']:.2f}%{interval} ({seeds} seed{'s' if seeds > 1 else ''})"


def run_results(folder: Path) -> dict[str, dict[str, Any]]:
    """The results.json of each finished run in `folder`, by its dir's name (seed<k>; an eval_only run's names the
    seed of the model it tests)."""
    return {f.parent.name: json.loads(f.read_text()) for f in sorted(folder.glob("*/results.json"))}


def split_errors(results: dict[str, dict[str, Any]]) -> tuple[float, float]:
    """Mean error over the seeds' runs 01-05 (what the preset was tuned on) and runs 06-10 (held out)."""
    tune, held_out = [], []
    for run in results.values():
        errors = [run.get(f"test/lake_error/run{i:02d}") for i in range(1, 11)]
        if None not in errors:
            tune.append(sum(errors[:5]) / 5)
            held_out.append(sum(errors[5:]) / 5)
    return (sum(tune) / len(tune), sum(held_out) / len(held_out)) if tune else (math.nan, math.nan)


def paired(results: dict[str, dict[str, Any]], preset: dict[str, dict[str, Any]]) -> str:
    """The error of a folder's runs minus the preset's runs' (`run_results` both), seed by seed: the mean
    difference with its t-based 95% interval over the seeds both have, or the one seed's difference."""
    seeds = sorted(results.keys() & preset.keys())
    if not seeds:
        return "–"
    differences = np.array([results[s]["test/lake_error"] - preset[s]["test/lake_error"] for s in seeds])
    if len(seeds) == 1:
        return f"{differences[0]:+.2f} (seed {seeds[0].removeprefix('seed')})"
    return f"{differences.mean():+.2f} ± {t_ci95(differences):.2f} ({len(differences)} seeds)"


def rows_of(folders: dict[str, Path], preset: Path) -> dict[str, pd.Series]:
    """name -> the report's row of the runs in its folder (seeds summarised), its split errors and its error
    against the preset's runs in `preset` (`paired`), for the folders that hold finished runs."""
    found, preset_results = {}, run_results(preset)
    for name, folder in folders.items():
        table = runs_table([folder])[0] if folder.is_dir() else pd.DataFrame()
        if not table.empty and "lake_error" in table:
            results = run_results(folder)
            tune, held_out = split_errors(results)
            against = "–" if folder == preset else paired(results, preset_results)
            extra = pd.Series({"tune": tune, "held_out": held_out, "paired": against})
            found[name] = pd.concat([table.iloc[0], extra])
    return found


def published_table(rows: dict[str, pd.Series], members: int) -> str:
    """The published numbers and ours (the preset's, an ensemble of `members` ProtoNets), error on the one-shot runs
    when trained on small1 and on small2."""
    ours = [error(rows[n]) if n in rows else "not run" for n in ("preset", "small2")]
    method = "ProtoNet" if members == 1 else f"{members} ProtoNets (an ensemble)"
    lines = [*PUBLISHED, (f"{method}, `experiment=omniglot_minimal` (this page)", *ours)]
    headers = ["method", "error, trained on small1", "error, trained on small2"]
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=["left", "right", "right"])


def variants_table(rows: dict[str, pd.Series], what: dict[str, str]) -> str:
    """One line per run folder: the one-shot runs' error (all ten, against the preset's by seed, 01-05, 06-10), test
    accuracy, training time."""
    lines = [
        [f"`{name}`", what[name], error(row), row["paired"], f"{row['tune']:.1f}%", f"{row['held_out']:.1f}%",
         f"{100 * row['acc']:.2f}% ± {100 * row['ci95']:.2f}% ({int(row['episodes'])} episodes)",
         training(row, "–")]
        for name, row in rows.items()
    ]  # fmt: skip
    headers = ["run", "what", "one-shot runs error", "minus the preset's, by seed", "runs 01–05", "runs 06–10",
               "test acc (20-way 1-shot)", "training time"]  # fmt: skip
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)


#: keys left out when a tuning run's settings are compared with the preset's (paths, seeds, names)
NOT_SETTINGS = ("seed", "dataset.root", "eval.lake_runs", "experiment_name", "checkpoint", "eval_only")


def settings(run_dir: Path) -> dict[str, Any]:
    """A run's saved config (`.hydra/config.yaml`) as dotted key -> value, on the current top-level schema, so a
    key that its version of the tool lacked reads as today's default."""
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    try:
        saved = OmegaConf.merge(OmegaConf.structured(Config), saved)
    except Exception:  # a key the schema no longer has: the config as saved
        pass
    values = flat(OmegaConf.to_container(saved, resolve=False, enum_to_str=True), skip=frozenset())
    return {k: v for k, v in values.items() if k not in NOT_SETTINGS and v != "???"}


def shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")


def differences(run_dir: Path, preset_dir: Path) -> str:
    """The settings of `run_dir` that differ from the preset's run's, as overrides; a key that the run's version of
    the tool did not have yet is left out (it had none of what the key switches on)."""
    run, preset = settings(run_dir), settings(preset_dir)
    changed = [f"`{k}={shown(v)}`" for k, v in sorted(run.items()) if k not in preset or v != preset[k]]
    return " ".join(changed) or "none: the preset's settings"


def tuning_runs(folder: Path, preset_dir: Path) -> dict[str, tuple[Path, str]]:
    """The runs tried while choosing the preset (folder/<name>/<seed dir>): name -> (its folder, how its settings
    differ from those of the preset's run `preset_dir`)."""
    found = {}
    for run in sorted(folder.glob("*/*/.hydra/config.yaml")) if folder.is_dir() else []:
        found.setdefault(run.parents[2].name, (run.parents[2], differences(run.parents[1], preset_dir)))
    return found


def wall(info: list[dict[str, Any]]) -> str:
    times = [i["wall_s"] for i in info if i.get("wall_s") and not i.get("resumed")]
    return f"{duration(sum(times) / len(times))} per seed (the whole command)" if times else "not recorded"


def training(row: pd.Series, missing: str = "not recorded") -> str:
    """The mean training time of a row's seeds (the report's `wall_s`, from each run's timing.json)."""
    return duration(row["wall_s"]) if "wall_s" in row and pd.notna(row["wall_s"]) else missing


def commits(folders: list[Path]) -> str:
    """The distinct `git_commit`s in the results.json provenance of the runs under `folders`."""
    found = sorted({json.loads(f.read_text()).get("provenance", {}).get("git_commit") or "not recorded"
                    for folder in folders for f in folder.glob("*/results.json")})  # fmt: skip
    return ", ".join(f"`{c[:7]}{' + uncommitted changes' if c.endswith('+dirty') else ''}`" for c in found)


def section(out: Path, infos: dict[str, dict[str, Any]], provenance: str) -> list[str]:
    """The section's lines: what the preset is, the published numbers beside ours, the variants and what was tried."""
    command = "python -m benchmarks.results_page --run outputs/results_page --only omniglot --omniglot DIR"
    lines = [
        '## Omniglot "minimal": one-shot runs',
        "",
        "Trained only on the 5 alphabets of `images_background_small1` (validation: its last alphabet, Latin), "
        "tested on the 10 official 20-way within-alphabet one-shot runs (`run01`–`run10`, 200 test images), "
        "each test image classified on its own against the run's 20 training images. Nothing from the runs is "
        "used for training or checkpoint choice; settings are chosen on the error on runs 01–05, and runs 06–10 "
        "are the held-out check. Lower is better.",
        "",
    ]
    preset = out / FOLDER / "preset"
    rows = rows_of({name: out / FOLDER / name for name in RUNS}, preset)
    if "preset" not in rows:
        return [*lines, f"Not run yet: `{command}` runs it and writes this section.", ""]
    preset_info = [infos[n] for n in infos if n.startswith(f"{FOLDER}/preset/")]
    lines += [
        provenance,
        "",
        published_table(rows, settings(preset / f"seed{SEEDS[0]}").get("algorithm.members", 1)),
        "",
        f"The preset's command: `python -m fewshot_exp experiment=omniglot_minimal dataset.root=DIR seed=S`. Its "
        f"wall time: {wall(preset_info)}, of which training {training(rows['preset'])}. The interval is the t-based "
        "95% interval over training seeds; a single seed has none (its 200 test images give a binomial standard "
        "error of about 2 points at 10% error).",
        "",
        "### What each choice does",
        "",
        "Each row changes one thing against the preset: `no_tta` tests the preset's own models again "
        "(`eval_only=true`) without the test-time views, so its difference to the preset's row is what the views do "
        "on the same weights; `one_model` trains one ProtoNet instead of the ensemble, so its row against the preset's "
        "is what the ensemble does; `small2` trains on the other small background set. The numbers are the report's "
        f"(`python -m fewshot_exp.report outputs/results_page/{FOLDER}/<run>`), with the error on runs 01–05 and "
        "06–10 apart, and the row's error minus the preset's on the same training seed (its mean over the seeds both "
        "have, with the t-based 95% interval of that mean: the paired comparison). Test accuracy is on the "
        "background alphabets the training set lacks (the first episodes of one sequence in every row; for "
        "`small2` other alphabets), ± over seeds where there are several, over episodes otherwise. A test episode "
        "with 16 views takes about 17 times as long as one without.",
        "",
        variants_table(rows, {name: what for name, (what, _, _) in RUNS.items()}),
        "",
    ]
    tried = tuning_runs(out / TUNING, preset / f"seed{SEEDS[0]}")
    tried_rows = rows_of({name: folder for name, (folder, _) in tried.items()}, preset)
    if tried_rows:
        lines += [
            "### What was tried",
            "",
            f"Other settings tried against the preset, at commits {commits([f for f, _ in tried.values()])}, kept "
            f"in `outputs/results_page/{TUNING}/<run>` (each a plain `python -m fewshot_exp` command with the "
            f"preset and these settings); each row lists the settings in which it differs from the preset's run "
            f"above (seed {SEEDS[0]}), read from the two runs' saved configs.",
            "",
            variants_table(tried_rows, {name: overrides for name, (_, overrides) in tried.items()}),
            "",
        ]
    return lines
