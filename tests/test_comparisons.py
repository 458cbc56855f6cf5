"""Comparisons a reviewer accepts: runs are tested on episodes fixed by the data, the shape and `eval.seed`; the
report gives an across-seed interval where runs differ only in seed, and a paired difference from a baseline row
on the same episodes (checked against scipy on made-up run dirs), and marks rows on other episodes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from scipy import stats
from test_report import fake_run
from wandb_records import logged_run

from fewshot_exp.report import main as report_main

QUERIES = 75  # 5-way, 15 queries per class: each episode's accuracy is a multiple of 1/75


def episode_accuracies(seed: int, skill: float, episodes: int = 60) -> np.ndarray:
    """Made-up per-episode accuracies: a shared episode difficulty plus a model's `skill`, on the 1/75 grid."""
    rng = np.random.default_rng(seed)
    hardness = np.random.default_rng(0).normal(0, 0.08, episodes)  # the same episodes for every model
    acc = np.clip(0.7 + skill + hardness + rng.normal(0, 0.03, episodes), 0, 1)
    return np.round(acc * QUERIES) / QUERIES


def made_up_run(
    run_dir: Path,
    algorithm: str,
    seed: int,
    acc: np.ndarray | None,
    fingerprint: str = "f0",
    csv: bool = True,
    overrides: tuple[str, ...] = (),
) -> None:
    """A finished run dir of `algorithm` and `seed`, with `overrides` on its command line too, whose test episodes
    had accuracies `acc`."""
    fake_run(run_dir, [f"algorithm={algorithm}", f"seed={seed}", *overrides], None)
    hydra = run_dir / ".hydra" / "hydra.yaml"
    hydra.write_text(hydra.read_text().replace("algorithm: protonet", f"algorithm: {algorithm}"))
    results = {
        "test/acc": float(acc.mean()),
        "test/acc_ci95": 1.96 * float(acc.std(ddof=1)) / math.sqrt(len(acc)),
        "test/episodes": len(acc),
        "test/episodes_fingerprint": fingerprint,
        "val/best_acc": float(acc.mean()) + 0.01,
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    if csv:
        table = pd.DataFrame({"episode": range(len(acc)), "acc": acc, "loss": 1 - acc})
        table.to_csv(run_dir / "test_episodes.csv", index=False)


def report(tmp_path: Path, *args: str) -> pd.DataFrame:
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report"), *args]) == 0
    return pd.read_csv(tmp_path / "report" / "report.csv").set_index("algorithm")


def t_half_width(values: np.ndarray) -> float:
    return stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))


def test_seeds_get_a_t_interval_across_seeds_and_are_compared_seed_by_seed(tmp_path):
    accs = {}
    for algorithm, skill in (("protonet", 0.0), ("matching", 0.04)):
        for seed in (0, 1, 2):
            accs[algorithm, seed] = episode_accuracies(10 * seed + len(algorithm), skill + 0.02 * seed)
            made_up_run(tmp_path / "runs" / f"{algorithm}{seed}", algorithm, seed, accs[algorithm, seed])
    table = report(tmp_path, "--baseline", "algorithm=protonet")
    per_seed = {a: np.array([accs[a, s].mean() for s in (0, 1, 2)]) for a in ("protonet", "matching")}
    for algorithm, means in per_seed.items():
        row = table.loc[algorithm]
        assert row.seeds == 3 and math.isclose(row.acc, means.mean(), rel_tol=1e-12)
        assert math.isclose(row.ci95, t_half_width(means), rel_tol=1e-9)  # over seeds, not episodes
        episode_ci95 = np.mean([1.96 * accs[algorithm, s].std(ddof=1) / math.sqrt(60) for s in (0, 1, 2)])
        assert math.isclose(row.episode_ci95, episode_ci95, rel_tol=1e-9)
        assert math.isclose(row.val_best, means.mean() + 0.01, rel_tol=1e-9)
    matching, protonet = table.loc["matching"], table.loc["protonet"]
    diff = per_seed["matching"] - per_seed["protonet"]
    assert protonet.vs_baseline == "baseline" and matching.vs_baseline == "paired over 3 seeds"
    assert math.isclose(matching["diff"], diff.mean(), rel_tol=1e-9)
    assert math.isclose(matching.diff_ci95, t_half_width(diff), rel_tol=1e-9)
    p_value = stats.ttest_rel(per_seed["matching"], per_seed["protonet"]).pvalue
    assert math.isclose(matching.p_value, p_value, rel_tol=1e-9)
    shown = (tmp_path / "report" / "report.md").read_text()
    assert f"{100 * means.mean():.2f} ± {100 * t_half_width(means):.2f}" in shown
    assert f"{100 * diff.mean():+.2f} ± {100 * t_half_width(diff):.2f}" in shown


def test_single_runs_are_compared_episode_by_episode_and_other_episodes_are_marked(tmp_path, capsys):
    runs = tmp_path / "runs"
    base, better = episode_accuracies(1, 0.0), episode_accuracies(2, 0.05)
    made_up_run(runs / "protonet", "protonet", 0, base)
    made_up_run(runs / "matching", "matching", 3, better)  # another seed, the same test episodes
    made_up_run(runs / "relation", "relation", 0, better, fingerprint="f1")  # other episodes
    made_up_run(runs / "maml", "maml", 0, better, csv=False)  # no per-episode file
    table = report(tmp_path, "--baseline", "algorithm=protonet")
    single = table.loc["protonet"]
    assert single.seeds == 1 and single.ci95 == single.episode_ci95  # a single run keeps its episode interval
    row = table.loc["matching"]
    d = better - base
    assert row.vs_baseline == "paired over 60 episodes"
    assert math.isclose(row["diff"], d.mean(), rel_tol=1e-9) and math.isclose(row.diff_ci95, t_half_width(d))
    assert math.isclose(row.p_value, stats.ttest_rel(better, base).pvalue, rel_tol=1e-9)
    assert row.p_value < 1e-6  # the shared episode difficulty cancels in the pairs
    assert table.loc["relation"].vs_baseline == "episodes differ" and pd.isna(table.loc["relation"]["diff"])
    assert table.loc["maml"].vs_baseline == "no per-episode results" and pd.isna(table.loc["maml"].p_value)
    assert "episodes differ" in capsys.readouterr().out


def made_up_curve(run_dir: Path, algorithm: str, seed: int, accs: dict[int, np.ndarray]) -> None:
    """An eval_only run dir: the shot curve at the shots of `accs` of a checkpoint of `algorithm` trained with `seed`
    (and episode.k_shot=4), with those per-episode accuracies."""
    fake_run(run_dir, ["eval_only=true", f"checkpoint=/ckpt/{algorithm}{seed}", "eval.k_shots=[2,8]"], None)
    model = {"checkpoint": f"/ckpt/{algorithm}{seed}/best.pt", "dataset": "glyphs", "algorithm": algorithm,
             "distance": "l2", "train_n_way": 5, "train_k_shot": 4, "seed": seed,
             "overrides": {"algorithm": algorithm, "episode.k_shot": "4", "seed": str(seed)}}  # fmt: skip
    curve = [{"n_way": 5, "k_shot": k, "acc": float(a.mean()), "ci95": 0.01, "episodes": len(a),
              "episodes_fingerprint": f"k{k}"} for k, a in accs.items()]  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps({"eval_only": True, "model": model, "curve": curve}))
    tables = [pd.DataFrame({"n_way": 5, "k_shot": k, "episode": range(len(a)), "acc": a}) for k, a in accs.items()]
    pd.concat(tables).to_csv(run_dir / "curve_episodes.csv", index=False)


def test_shot_curves_are_rows_per_configuration_and_shot_paired_by_seed(tmp_path):
    """Curves of checkpoints trained with several seeds: one row per (algorithm, shots), its seeds summarised,
    ProtoMAML paired with ProtoNet at each shot, seed by seed; a single seed is paired episode by episode."""
    accs = {}
    for algorithm, skill in (("protonet", 0.0), ("protomaml", 0.03)):
        for seed in (0, 1):
            accs[algorithm, seed] = {k: episode_accuracies(seed + 7 * k, skill + 0.01 * k) for k in (2, 8)}
            made_up_curve(tmp_path / "runs" / f"{algorithm}{seed}", algorithm, seed, accs[algorithm, seed])
    table = report(tmp_path, "--baseline", "algorithm=protonet").reset_index()
    assert len(table) == 4 and "checkpoint" not in table and set(table.seeds) == {2}
    for k in (2, 8):
        row = table[(table.algorithm == "protomaml") & (table.k_shot == k)].iloc[0]
        diff = np.array([accs["protomaml", s][k].mean() - accs["protonet", s][k].mean() for s in (0, 1)])
        assert row.vs_baseline == "paired over 2 seeds" and math.isclose(row["diff"], diff.mean(), rel_tol=1e-9)

    for seed_one in tmp_path.glob("runs/*1"):
        seed_one.rename(tmp_path / seed_one.name)  # one seed each: paired over the episodes of each shot
    table = report(tmp_path, "--baseline", "algorithm=protonet").reset_index()
    row = table[(table.algorithm == "protomaml") & (table.k_shot == 8)].iloc[0]
    d = accs["protomaml", 0][8] - accs["protonet", 0][8]
    assert (
        row.vs_baseline == "paired over 60 episodes"
        and math.isclose(
            row.p_value, stats.ttest_rel(accs["protomaml", 0][8], accs["protonet", 0][8]).pvalue, rel_tol=1e-9
        )
        and math.isclose(row["diff"], d.mean())
    )


@pytest.mark.parametrize("baseline", ["encoder.channels_last=false", "encoder.channels_last=False"])
def test_a_baseline_names_swept_values_as_typed_on_the_command_line(tmp_path, baseline):
    """A sweep's jobs record `key=true,false` as True and False (and 1e-3 as 0.001); --baseline takes either."""
    for seed in (0, 1):
        for layout, lr, skill in (("True", "0.001", 0.01), ("False", "0.001", 0.0), ("False", "0.01", -0.02)):
            swept = (f"encoder.channels_last={layout}", f"optimizer.lr={lr}")  # as a sweep's job records them
            accuracies = episode_accuracies(seed, skill + 0.01 * seed)
            made_up_run(tmp_path / "runs" / f"{layout}{lr}{seed}", "protonet", seed, accuracies, overrides=swept)
    table = report(tmp_path, "--baseline", baseline, "--baseline", "optimizer.lr=1e-3").reset_index()
    vs = {(str(r["encoder.channels_last"]), r["optimizer.lr"]): r.vs_baseline for _, r in table.iterrows()}
    assert vs == {
        ("True", 0.001): "paired over 2 seeds",
        ("False", 0.001): "baseline",
        ("False", 0.01): "paired over 2 seeds",
    }


@pytest.mark.parametrize(
    "baseline, message",
    [
        ("algorithm=nope", "--baseline algorithm=nope names no row of the report (algorithm has matching, protonet)"),
        ("colour=red", "--baseline colour=red: give key=value with a key column of the report: dataset, algorithm"),
    ],
)
def test_a_baseline_that_names_no_row_is_one_line_error(tmp_path, capsys, baseline, message):
    made_up_run(tmp_path / "runs" / "a", "protonet", 0, episode_accuracies(1, 0.0))
    made_up_run(tmp_path / "runs" / "b", "matching", 0, episode_accuracies(2, 0.0))
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "runs"), "--baseline", baseline])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1


TINY = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "eval.episodes=20"]
SMALL = ["encoder.hidden=8", "encoder.out_channels=8"]


def test_runs_of_other_seeds_and_algorithms_are_tested_on_the_same_episodes(glyphs_root, tmp_path):
    """protonet seed 0 and matching seed 1 share the test episodes (fingerprint); eval.seed=1 draws others; the
    per-episode accuracies go to test_episodes.csv and W&B; the report pairs the two on the same episodes."""
    runs = {
        "protonet": ["algorithm=protonet", "seed=0"],
        "matching": ["algorithm=matching", "seed=1", "logger=none"],
        "eval_seed": ["algorithm=protonet", "seed=0", "eval.seed=1", "logger=none"],
    }
    for name, overrides in runs.items():
        run_dir = tmp_path / "runs" / name
        proc = run_cli(*TINY, *SMALL, *overrides, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    results = {name: json.loads((tmp_path / "runs" / name / "results.json").read_text()) for name in runs}
    episodes = {name: pd.read_csv(tmp_path / "runs" / name / "test_episodes.csv") for name in runs}
    prints = {name: r["test/episodes_fingerprint"] for name, r in results.items()}
    assert prints["protonet"] == prints["matching"] != prints["eval_seed"] and len(prints["protonet"]) == 16
    for name, table in episodes.items():
        assert list(table.columns) == ["episode", "acc", "loss"] and list(table.episode) == list(range(20))
        assert math.isclose(table.acc.mean(), results[name]["test/acc"], rel_tol=1e-9)
        assert ((table.acc * 75).round() - table.acc * 75).abs().max() < 1e-9  # 5-way, 15 queries per class
    logged = {key: value for row in logged_run(tmp_path / "runs" / "protonet")["history"] for key, value in row.items()}
    assert logged["test/acc_per_episode/_type"] == "histogram"
    assert (logged["test/per_episode/_type"], logged["test/per_episode/nrows"]) == ("table-file", 20)

    table = report(tmp_path, "--baseline", "algorithm=protonet").reset_index()
    matching = table[table.algorithm == "matching"].iloc[0]
    a, b = episodes["matching"].acc.to_numpy(), episodes["protonet"].acc.to_numpy()
    assert matching.vs_baseline == "paired over 20 episodes" and math.isclose(matching["diff"], (a - b).mean())
    p_value = stats.ttest_rel(a, b).pvalue
    assert math.isclose(matching.p_value, p_value, rel_tol=1e-9) or (np.isnan(p_value) and np.isnan(matching.p_value))
    assert set(table[table.algorithm == "protonet"].vs_baseline) == {"baseline"}  # eval.seed=1 is its own baseline
