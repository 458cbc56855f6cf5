"""The real command line, in a subprocess: a tiny end-to-end run, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import OMNIGLOT_DIR, run_cli
from wandb_records import logged_run

TINY = ["train.episodes=30", "train.val_every=15", "train.log_every=10", "train.val_episodes=20", "eval.episodes=50"]


@pytest.fixture(scope="module")
def default_run(glyphs_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "default"
    proc = run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy:" in proc.stdout and "95% CI over 50 episodes" in proc.stdout
    return run_dir


def test_results_json(default_run):
    results = json.loads((default_run / "results.json").read_text())
    assert results["test/episodes"] == 50
    assert 0.4 < results["test/acc"] <= 1.0  # 5-way: chance is 0.2, even 30 training episodes beat it
    assert 0 < results["test/acc_ci95"] < 0.1
    assert 0 <= results["val/best_acc"] <= 1


def test_run_dir_holds_config_metrics_and_checkpoints(default_run):
    assert (default_run / ".hydra" / "config.yaml").is_file()
    assert (default_run / "best.pt").is_file() and (default_run / "last.pt").is_file()
    rows = [json.loads(line) for line in (default_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [10, 20, 30]
    assert [r["step"] for r in rows if "val/acc" in r] == [15, 30]
    assert rows[-1]["test/acc"] == json.loads((default_run / "results.json").read_text())["test/acc"]


def test_wandb_offline_run_has_the_metrics(default_run):
    run = logged_run(default_run)
    results = json.loads((default_run / "results.json").read_text())
    assert run["summary"]["test/acc"] == pytest.approx(results["test/acc"])
    assert run["summary"]["test/acc_ci95"] == pytest.approx(results["test/acc_ci95"])
    assert any("train/loss" in row for row in run["history"]) and any("val/acc" in row for row in run["history"])
    assert run["group"] == "default"
    assert (
        run["name"] == "eval.episodes=50,train.episodes=30,train.log_every=10,train.val_episodes=20,train.val_every=15"
    )
    assert run["config"]["algorithm"] == "protonet" and run["config"]["dataset"] == "glyphs"  # flat, as typed
    assert run["config"]["episode.k_shot"] == 5 and run["config"]["train.episodes"] == 30
    ours = {k: v for k, v in run["config"].items() if k != "_wandb"}  # W&B's own entry
    assert not any(isinstance(v, dict) or k.endswith("_target_") for k, v in ours.items())
    assert "algorithm=protonet" in run["tags"]
    assert run["job_type"] == "train"
    provenance = json.loads((default_run / "results.json").read_text())["provenance"]
    assert {k: run["config"][f"provenance.{k}"] for k in provenance} == provenance


@pytest.mark.slow
def test_a_forked_run_ends_where_a_new_interpreter_does(default_run, glyphs_root, tmp_path):
    """The other CLI tests run forks of tests/forkserver.py: a new interpreter gives the same numbers."""
    proc = run_cli(*TINY, f"dataset.root={glyphs_root}", f"hydra.run.dir={tmp_path}", fresh=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("results.json", "metrics.jsonl"):
        assert (tmp_path / name).read_text() == (default_run / name).read_text(), name
    assert "test accuracy:" in proc.stdout and "95% CI over 50 episodes" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (OMNIGLOT_DIR / "one_shot_runs").is_dir(), reason=f"Omniglot data not found at {OMNIGLOT_DIR}")
def test_omniglot_with_lake_runs(tmp_path):
    proc = run_cli(
        "dataset=omniglot",
        f"dataset.root={OMNIGLOT_DIR}",
        "dataset.background=small1",
        "logger=none",
        f"eval.lake_runs={OMNIGLOT_DIR / 'one_shot_runs'}",
        "episode.n_way=20",
        "episode.k_shot=1",
        "episode.n_query=5",
        *TINY,
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    per_run = {k: v for k, v in results.items() if k.startswith("test/lake_error/")}
    assert len(per_run) == 10 and all(0 <= v <= 100 for v in per_run.values())
    assert results["test/lake_error"] == pytest.approx(sum(per_run.values()) / 10)
    assert results["test/lake_error"] < 95  # chance on 20-way is 95% error
    assert "Omniglot one-shot runs:" in proc.stdout
    for tta in (0, 3):  # eval_only tests the runs too: as training did without views, otherwise with them
        evaluated = tmp_path / f"eval_tta{tta}"
        proc = run_cli("eval_only=true", f"checkpoint={tmp_path}", f"eval.tta={tta}", "dataset.augment.rotate=10",
                       "logger=none", f"hydra.run.dir={evaluated}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        again = json.loads((evaluated / "results.json").read_text())
        if tta == 0:
            assert {k: again[k] for k in per_run} == per_run
        else:
            assert len([k for k in again if k.startswith("test/lake_error/")]) == 10


# The full catalogue runs in-process in test_bad_inputs.py; these two go through a real subprocess.
BAD_INPUTS = [
    (["episode.k_shot=abc"], "episode.k_shot"),  # fails while Hydra composes the config
    (["episode.n_way=500"], "n_way=500 is more than the"),  # fails inside the job, after the data is loaded
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_error(overrides, message, glyphs_root, tmp_path):
    data = [] if any(o.startswith("dataset=") for o in overrides) else [f"dataset.root={glyphs_root}"]
    proc = run_cli(*overrides, *data, "logger=none", f"hydra.run.dir={tmp_path}/run", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert message in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "results.json").exists()


# The README's headline commands on the default data, with the training budget shortened and W&B off (the default
# run above checks the W&B run of the same command line).
@pytest.mark.parametrize(
    "overrides",
    [["algorithm=protomaml", "episode.k_shot=8"], pytest.param(["episode.k_shot=32"], marks=pytest.mark.slow)],
    ids=["protomaml-8-shot", "32-shot"],
)
def test_headline_commands_run_on_the_default_data(overrides, glyphs_root, tmp_path):
    short = ["train.episodes=2", "train.val_every=2", "train.log_every=2", "train.val_episodes=1", "eval.episodes=2"]
    proc = run_cli(*overrides, *short, "logger=none", f"dataset.root={glyphs_root}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test/k_shot"] == int(overrides[-1].split("=")[1]) and results["test/episodes"] == 2
    assert set(results["provenance"]) == {"fewshot_exp", "git_commit", "torch", "device", "dataset_hash"}


@pytest.mark.slow  # tests/test_shot_curve.py runs a curve from a checkpoint in the fast suite
def test_a_shot_curve_up_to_32_shots_from_one_checkpoint(default_run, tmp_path):
    proc = run_cli(
        "eval_only=true", f"checkpoint={default_run}", "eval.k_shots=[1,2,4,8,16,32]", "eval.episodes=10",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads((tmp_path / "results.json").read_text())["curve"]
    assert [p["k_shot"] for p in curve] == [1, 2, 4, 8, 16, 32] and all(p["episodes"] == 10 for p in curve)
    assert "5-way 32-shot:" in proc.stdout
    assert logged_run(tmp_path)["job_type"] == "eval"


@pytest.mark.slow
def test_progress_bars_do_not_flood_a_log_file(glyphs_root, tmp_path):
    """stderr is a pipe here, as in a SLURM log: each bar is drawn when it starts and ends, not at every update.
    A new interpreter: tqdm reads TQDM_* variables when it is imported, the fork server imported it with bars off."""
    proc = run_cli(
        *TINY,
        "logger=none",
        f"dataset.root={glyphs_root}",
        f"hydra.run.dir={tmp_path}",
        env={"TQDM_DISABLE": ""},
        fresh=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    draws = proc.stderr.replace("\r", "\n").splitlines()
    assert 1 <= sum(line.startswith("train:") for line in draws) <= 3, proc.stderr[-3000:]
    assert sum(line.startswith("test:") for line in draws) <= 3
