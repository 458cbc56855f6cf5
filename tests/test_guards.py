"""Guards, in a real subprocess: W&B failing never stops training, and a NaN loss stops the run with a
one-line error while the last good checkpoint stays loadable."""

from __future__ import annotations

import json

import torch
from test_resume import run


def test_wandb_init_failure_does_not_stop_the_run(glyphs_root, tmp_path):
    proc = run(
        tmp_path,
        "import wandb\ndef refuse(*a, **k): raise ConnectionError('W&B unreachable')\nwandb.init = refuse",
        f"dataset.root={glyphs_root}",
        "logger=wandb",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "W&B init failed, continuing with local metrics only: ConnectionError: W&B unreachable" in proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())["test/episodes"] == 20
    assert any("test/acc" in json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_wandb_log_failure_does_not_stop_the_run(glyphs_root, tmp_path):
    proc = run(
        tmp_path,
        "import wandb.sdk.wandb_run as r\ndef fail(*a, **k): raise RuntimeError('quota')\nr.Run.log = fail",
        f"dataset.root={glyphs_root}",
        "logger=wandb",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "W&B log failed" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(glyphs_root, tmp_path):
    poison = (
        "import fewshot_exp.algorithms.protonet as p\norig = p.ProtoNet.forward\nn = [0]\n"
        "def forward(self, ep):\n    n[0] += 1\n    out = orig(self, ep)\n"
        "    return out * float('nan') if self.training and n[0] >= 13 else out\n"
        "p.ProtoNet.forward = forward"
    )
    proc = run(tmp_path, poison, f"dataset.root={glyphs_root}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines[-1].startswith("error: training diverged: loss is nan at episode 15")
    assert "Traceback" not in proc.stderr
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["progress"]["episode"] == 10  # the checkpoint before the NaNs, not overwritten
    assert all(torch.isfinite(t).all() for t in state["algorithm"].values() if t.is_floating_point())
    assert not (tmp_path / "results.json").exists()
