"""A real sweep through the CLI (two good jobs, one impossible one), then the report over its run dirs."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from wandb_records import logged_run

from fewshot_exp.report import main as report_main

TINY = ["train.episodes=10", "train.val_every=10", "train.log_every=5", "train.val_episodes=2", "eval.episodes=5",
        "encoder.hidden=8", "encoder.out_channels=8"]  # fmt: skip
CONV4_8_PARAMETERS = 80 + 3 * 584 + 4 * 16  # 3x3 convolutions 1->8 and 3 x 8->8 with biases, 4 batch norms


def test_sweep_then_report(glyphs_root, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "episode.k_shot=1,3,40", *TINY, f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}")
    # the impossible job (40 + 15 images per class > 50) fails alone; the sweep finishes and exits 1 naming it
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 jobs failed: ") and "k_shot + n_query = 40 + 15" in last
    assert "episode.k_shot=40" in last
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"]) == (3, 2)
    failed_dir = Path(summary["failed"][0]["run_dir"])
    assert failed_dir.name.startswith("2_") and "UserError" in (failed_dir / "error.txt").read_text()
    job_dirs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.json").is_file())
    assert len(job_dirs) == 2  # subdirs named by job number and overrides
    assert summary["finished_runs"] == [str(d.resolve()) for d in job_dirs]
    assert job_dirs[0].name.startswith("0_") and "episode.k_shot=1" in job_dirs[0].name
    assert job_dirs[1].name.startswith("1_") and "episode.k_shot=3" in job_dirs[1].name
    results = {json.loads((d / "results.json").read_text())["test/k_shot"]: d for d in job_dirs}
    assert sorted(results) == [1, 3]
    runs = [logged_run(d) for d in job_dirs]  # one W&B run per job, one group per sweep, named by overrides
    assert [r["group"] for r in runs] == ["sweep", "sweep"]
    shots = [[o for o in r["name"].split(",") if o.startswith("episode.k_shot=")] for r in runs]
    assert shots == [["episode.k_shot=1"], ["episode.k_shot=3"]]
    assert [r["summary"]["test/acc"] for r in runs] == [
        json.loads((d / "results.json").read_text())["test/acc"] for d in job_dirs
    ]

    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 1  # there is a failed run
    printed = capsys.readouterr().out
    assert "Failed runs:" in printed and "episode.k_shot=40" in printed
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert list(table.k_shot) == [1, 3] and set(table.algorithm) == {"protonet"}
    for row in table.itertuples():
        expected = json.loads((results[row.k_shot] / "results.json").read_text())
        assert abs(row.acc - expected["test/acc"]) < 1e-9 and abs(row.ci95 - expected["test/acc_ci95"]) < 1e-9
        assert f"{100 * expected['test/acc']:.2f} ± {100 * expected['test/acc_ci95']:.2f}" in printed
    assert (tmp_path / "report" / "acc_vs_shots.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000  # loss and accuracy against episodes
    shown = (tmp_path / "report" / "report.md").read_text()
    assert shown.startswith("| dataset") and "![test accuracy against shots](acc_vs_shots.png)" in shown
    assert "![training curves](curves.png)" in shown and "train ep/s" in shown and "parameters" in shown
    for row in table.itertuples():  # the measured speed and the model size of the run
        timing = json.loads((results[row.k_shot] / "timing.json").read_text())
        assert row.wall_s == timing["train/wall_s"] and row.episodes_per_s == timing["train/episodes_per_s"]
        assert timing["train/timed_episodes"] == 10 and row.parameters == CONV4_8_PARAMETERS

    # the same sweep dir again, one good job: its summary is of this sweep, not the earlier failure
    again = run_cli("-m", "episode.k_shot=2", *TINY, f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (1, 1, [])
    assert "episode.k_shot=2" in summary["finished_runs"][0]


def fake_run(
    run_dir: Path, overrides: list[str], acc: float | None, mode: str = "RUN", config: str = "", **results: float
) -> None:
    """A run dir as `python -m fewshot_exp` leaves it, with made-up numbers (`acc` None: no results.json)."""
    (run_dir / ".hydra").mkdir(parents=True)
    seed = next((o.split("=")[1] for o in overrides if o.startswith("seed=")), 0)
    (run_dir / ".hydra" / "config.yaml").write_text(f"seed: {seed}\nepisode: {{n_way: 5, k_shot: 1}}\n{config}")
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  mode: {mode}\n  sweep: {{dir: 'outputs/multirun/${{now:%Y-%m-%d_%H-%M-%S}}'}}\n"  # as saved
        "  runtime:\n    choices: {dataset: glyphs, algorithm: protonet, distance: l2}\n"
        f"  overrides:\n    task: {overrides}\n"
    )
    if acc is not None:
        (run_dir / "results.json").write_text(
            json.dumps({"test/acc": acc, "test/acc_ci95": 0.01, "test/episodes": 300, **results})
        )


def test_report_lists_failed_runs_and_exits_nonzero(tmp_path, capsys):
    fake_run(tmp_path / "broken", [], None)
    (tmp_path / "broken" / "error.txt").write_text(
        "UserError: the message\nTraceback (most recent call last):\n  ...\n"
    )
    assert report_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Failed runs:\n- " in out and out.rstrip().endswith("broken: UserError: the message")  # not the traceback


def test_a_corrupt_results_json_is_a_failed_run_and_the_others_are_reported(tmp_path, capsys):
    fake_run(tmp_path / "good", ["seed=0"], 0.8)
    fake_run(tmp_path / "cut", ["seed=1", "episode.n_query=5"], 0.7)
    (tmp_path / "cut" / "results.json").write_text('{"test/acc": 0.7, "test/acc_ci')
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 1
    out = capsys.readouterr().out
    assert "- " + str(tmp_path / "cut") + ": unreadable results.json (Unterminated string" in out
    assert len(pd.read_csv(tmp_path / "report" / "report.csv")) == 1


def test_out_naming_a_file_is_one_line_before_any_work(tmp_path, capsys):
    fake_run(tmp_path / "run", [], 0.8)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "run"), "--out", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2
        and err
        == f"error: --out {tmp_path / 'taken'} is a file; give a directory for report.md, report.csv and the plots\n"
    )
    assert (tmp_path / "taken").read_text() == "a file" and not (tmp_path / "run" / "report.md").exists()


def test_report_keeps_runs_apart_that_differ_in_any_swept_key(tmp_path):
    """Only `seed` is summarised over: runs that differ in episode.n_query (or eval.episodes, experiment) are
    rows."""
    for i, (n_query, acc) in enumerate([(5, 0.5), (10, 0.7), (10, 0.8)]):
        resumed = ["resume=true"] if i == 2 else []  # a resumed run is the same run
        fake_run(tmp_path / f"{i}", [f"episode.n_query={n_query}", f"seed={i}", *resumed], acc)
    report_main([str(tmp_path), "--out", str(tmp_path / "report")])
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert sorted(zip(table["episode.n_query"], table.seeds, table.acc.round(4))) == [(5, 1, 0.5), (10, 2, 0.75)]


def test_omniglot_runs_error_is_the_mean_over_seeds_with_their_t_interval(tmp_path, capsys):
    for seed, error in enumerate([8.0, 10.0, 12.0]):
        fake_run(tmp_path / f"{seed}", [f"seed={seed}"], 0.9, **{"test/lake_error": error})
    fake_run(tmp_path / "other", ["seed=0", "eval.tta=0"], 0.9, **{"test/lake_error": 15.5})
    report_main([str(tmp_path), "--out", str(tmp_path / "report")])
    table = pd.read_csv(tmp_path / "report" / "report.csv").set_index("eval.tta")
    assert table.loc["-", "lake_error"] == 10.0 and table.loc["-", "seeds"] == 3
    assert abs(table.loc["-", "lake_error_ci95"] - 4.303 * 2 / 3**0.5) < 1e-2  # t(0.975, 2) * s / sqrt(3)
    assert pd.isna(table.loc["0", "lake_error_ci95"])  # one seed: no interval over seeds
    out = capsys.readouterr().out
    assert "10.00 ± 4.97" in out and "15.50" in out


def test_report_goes_to_the_w_and_b_group_project_and_entity_of_its_runs(tmp_path):
    from fewshot_exp.report import wandb_place

    logger = "experiment_name: mine\nlogger: {project: proj, entity: team, group: null}\n"
    fake_run(tmp_path / "single", [], 0.5, config=logger)
    assert wandb_place([tmp_path / "single"]) == ("mine", "proj", "team")  # a single run's group: experiment_name
    fake_run(tmp_path / "sweep" / "0_k=1", [], 0.5, mode="MULTIRUN", config=logger)
    assert wandb_place([tmp_path / "sweep" / "0_k=1"]) == ("sweep", "proj", "team")  # a job's: its sweep dir


@pytest.mark.slow  # eight W&B runs
def test_two_by_two_by_two_sweep_is_eight_wandb_runs_in_one_group(glyphs_root, tmp_path, capsys):
    """algorithm x n_way x k_shot: 8 jobs, 8 run dirs, 8 W&B runs in the sweep's group, each named by its
    overrides with the swept keys in its config; the report has 8 rows, a plot, and goes to W&B too."""
    sweep = tmp_path / "2x2x2"
    tiny = ["train.episodes=4", "train.val_every=4", "train.log_every=2", "train.val_episodes=4", "eval.episodes=10"]
    proc = run_cli(
        "-m", "algorithm=protonet,protomaml", "episode.n_way=2,3", "episode.k_shot=1,2", *tiny, "encoder.hidden=16",
        f"dataset.root={glyphs_root}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_dirs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(job_dirs) == 8
    runs = [logged_run(d) for d in job_dirs]
    assert {r["group"] for r in runs} == {"2x2x2"}
    assert len({r["name"] for r in runs}) == 8 and all("seed" not in r["name"] for r in runs)
    swept = {(r["config"]["algorithm"], r["config"]["episode.n_way"], r["config"]["episode.k_shot"])
             for r in runs}  # fmt: skip
    assert swept == {(a, n, k) for a in ("protonet", "protomaml") for n in (2, 3) for k in (1, 2)}

    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out), "--wandb"]) == 0
    table = pd.read_csv(out / "report.csv")
    assert len(table) == 8 and set(zip(table.algorithm, table.n_way, table.k_shot)) == swept
    assert (out / "acc_vs_shots.png").stat().st_size > 10_000
    report_run = logged_run(out)
    assert report_run["group"] == "2x2x2" and "report" in report_run["tags"] and report_run["job_type"] == "report"
    assert report_run["project"] == runs[0]["project"] == "fewshot-exp"
    logged = {key: value for row in report_run["history"] for key, value in row.items()}
    assert (logged["report/table/_type"], logged["report/table/nrows"]) == ("table-file", 8)
    assert logged["report/acc_vs_shots/_type"] == logged["report/curves/_type"] == "image-file"
    assert "W&B: report run" in capsys.readouterr().out
