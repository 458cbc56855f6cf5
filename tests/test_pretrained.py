"""train.init_from: an algorithm's encoder starts from another run's trained encoder."""

from __future__ import annotations

import pytest
import torch

from fewshot_exp.algorithms.maml import MAML, ProtoMAML
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.checkpoint import save_checkpoint
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.encoders.pretrained import init_encoder
from fewshot_exp.errors import UserError

CPU = torch.device("cpu")


def trained_protonet(hidden: int = 8) -> ProtoNet:
    torch.manual_seed(1)
    net = ProtoNet(Conv4(1, hidden=hidden, out_channels=hidden), Distance("l2"))
    with torch.no_grad():  # weights and BN statistics that differ from any fresh initialisation
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    return net


@pytest.mark.parametrize("kind", [ProtoMAML, MAML])
def test_the_encoder_comes_from_the_checkpoint_and_nothing_else(kind, tmp_path):
    source = trained_protonet()
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best.pt", {"algorithm": source.state_dict()})
    torch.manual_seed(2)
    target = kind(Conv4(1, hidden=8, out_channels=8), Distance("l2"), image_size=28)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}

    assert init_encoder(target, str(tmp_path / "run"), CPU) == tmp_path / "run" / "best.pt"  # a run dir: its best.pt
    after = target.state_dict()
    encoder_keys = [k for k in after if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(after[k], source.state_dict()[k]) for k in encoder_keys)
    assert all(not torch.equal(fresh[k], after[k]) for k in encoder_keys)  # every encoder tensor changed
    assert all(torch.equal(fresh[k], after[k]) for k in after if k not in encoder_keys)  # MAML's head kept its init
    # ProtoMAML's batch norm uses task statistics: the source's running statistics are not needed, and ignored
    assert not any("running_mean" in k for k in encoder_keys)


def test_a_different_encoder_is_refused_in_one_line(tmp_path):
    save_checkpoint(tmp_path / "wide.pt", {"algorithm": trained_protonet(hidden=16).state_dict()})
    target = ProtoNet(Conv4(1, hidden=8, out_channels=8), Distance("l2"))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        UserError, match=r"encoder.layers.0.0.weight has shape \(16, 1, 3, 3\) there and \(8, 1, 3, 3\)"
    ):
        init_encoder(target, str(tmp_path / "wide.pt"), CPU)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched

    save_checkpoint(tmp_path / "other.pt", {"algorithm": {"head.weight": torch.zeros(1)}})
    with pytest.raises(UserError, match="its model has no encoder.layers.0.0.weight"):
        init_encoder(target, str(tmp_path / "other.pt"), CPU)


@pytest.mark.slow
def test_through_the_command_line_and_resumed_without_the_source(glyphs_root, tmp_path):
    from conftest import run_cli

    tiny = ["train.episodes=4", "train.val_every=2", "train.val_episodes=2", "eval.episodes=2", "logger=none"]
    tiny += ["encoder.hidden=8", "encoder.out_channels=8", f"dataset.root={glyphs_root}"]
    source, run = tmp_path / "protonet", tmp_path / "protomaml"
    assert run_cli(*tiny, f"hydra.run.dir={source}").returncode == 0
    started = run_cli(*tiny, "algorithm=protomaml", f"train.init_from={source}", f"hydra.run.dir={run}")
    assert started.returncode == 0, started.stderr[-2000:]
    assert f"encoder initialised from {source / 'best.pt'}" in started.stdout + started.stderr
    (source / "best.pt").unlink()  # a resumed run continues from its own last.pt: the source is not read again
    resumed = run_cli(*tiny, "algorithm=protomaml", f"train.init_from={source}", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert "encoder initialised" not in log and "resuming" in log
