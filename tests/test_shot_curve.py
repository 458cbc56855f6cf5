"""eval_only=true: a trained checkpoint evaluated at several (n_way, k_shot) without retraining, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from wandb_records import logged_run

from fewshot_exp.report import main as report_main

TINY = ["train.episodes=20", "train.val_every=10", "train.log_every=10", "train.val_episodes=20", "eval.episodes=50"]
SMALL = ["encoder.hidden=16", "encoder.out_channels=16"]  # the curve's code paths do not depend on the width


@pytest.fixture(scope="module")
def trained(glyphs_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    proc = run_cli(
        *TINY, *SMALL, "distance=cosine", "logger=none", f"dataset.root={glyphs_root}", f"hydra.run.dir={run_dir}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_curve_from_a_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "curve"
    # the model, data and training shape come from the run's own overrides; only the evaluation is given here
    proc = run_cli(
        "eval_only=true", f"checkpoint={trained}", "eval.k_shots=[1,5]", "eval.n_ways=[3,5]", f"hydra.run.dir={out}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads((out / "results.json").read_text())["curve"]
    assert [(p["n_way"], p["k_shot"]) for p in curve] == [(3, 1), (3, 5), (5, 1), (5, 5)]
    assert all(p["episodes"] == 50 and 0 < p["ci95"] < 0.2 for p in curve)
    # the training shape, on the same seeded test episodes, reproduces the training run's own test accuracy
    trained_acc = json.loads((trained / "results.json").read_text())["test/acc"]
    assert curve[3]["acc"] == trained_acc
    assert curve[0]["acc"] > curve[2]["acc"]  # 3-way is easier than 5-way
    assert "5-way 5-shot: " in proc.stdout
    assert pd.read_csv(out / "curve.csv").shape == (4, 7)
    trained_results = json.loads((trained / "results.json").read_text())  # ... on the very same episodes
    assert curve[3]["episodes_fingerprint"] == trained_results["test/episodes_fingerprint"]
    assert len({p["episodes_fingerprint"] for p in curve}) == 4
    per_episode = pd.read_csv(out / "curve_episodes.csv")
    assert list(per_episode.columns) == ["n_way", "k_shot", "episode", "acc", "loss"] and len(per_episode) == 4 * 50
    point = per_episode[(per_episode.n_way == 5) & (per_episode.k_shot == 5)]
    assert point.acc.tolist() == pd.read_csv(trained / "test_episodes.csv").acc.tolist()
    assert (out / "acc_vs_shots.png").stat().st_size > 10_000

    run = logged_run(out)  # the W&B run: a table and the plot, the points in the summary
    assert "eval_only" in run["tags"] and "distance=cosine" in run["tags"]  # the model's choices, not this command's
    assert run["config"]["distance"] == "cosine" and run["config"]["distance.name"] == "cosine"
    assert run["summary"]["test/acc@5way5shot"] == trained_acc
    logged = {key: value for row in run["history"] for key, value in row.items()}
    assert (logged["test/curve/_type"], logged["test/curve/nrows"]) == ("table-file", 4)
    assert (logged["test/acc_vs_shots/_type"], logged["test/acc_vs_shots/width"]) == ("image-file", 1200)  # 2 panels

    assert report_main([str(out), "--out", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert list(zip(table.n_way, table.k_shot)) == [(3, 1), (3, 5), (5, 1), (5, 5)]
    assert set(table.algorithm) == {"protonet"} and list(table.acc) == [p["acc"] for p in curve]
    assert "5 |        5 |" in capsys.readouterr().out


def test_a_learned_head_limits_the_curves_n_way():
    """MAML's head has a row per class it was built for: a wider curve point is refused in one line."""
    from omegaconf import OmegaConf

    from fewshot_exp.errors import UserError
    from fewshot_exp.shot_curve import shapes

    cfg = OmegaConf.create(
        {"episode": {"n_way": 5, "k_shot": 1}, "eval": {"n_ways": [5, 20], "k_shots": [1, 5]},
         "algorithm": {"n_way": 5, "train_n_way": 10}}
    )  # fmt: skip
    with pytest.raises(UserError, match=r"eval.n_ways=\[5, 20\]: this checkpoint's head has 10 outputs"):
        shapes(cfg)
    cfg.eval.n_ways = [5, 10]
    assert shapes(cfg) == [(5, 1), (5, 5), (10, 1), (10, 5)]
    cfg.algorithm = {}  # no learned head (protonet): any n_way
    cfg.eval.n_ways = [20]
    assert shapes(cfg) == [(20, 1), (20, 5)]
