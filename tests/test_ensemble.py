"""`algorithm.members=M`: an ensemble of M independently trained copies of one algorithm
(fewshot_exp/algorithms/ensemble.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import call_cli
from test_algorithm_contract import episode, make

from fewshot_exp.algorithms.ensemble import Ensemble
from fewshot_exp.train import training_step

CPU = torch.device("cpu")


def test_members_start_apart_and_predict_by_their_mean_probability():
    ensemble = make("protonet", "algorithm.members=3")
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3
    first = [torch.cat([p.flatten() for p in m.parameters()]) for m in ensemble.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    ep = episode()
    ensemble.eval()
    with torch.no_grad():
        probabilities = torch.stack([m(ep).softmax(-1) for m in ensemble.members]).mean(0)
        torch.testing.assert_close(ensemble(ep).exp(), probabilities)


@pytest.mark.parametrize("name", ["protonet", "maml", "reptile"])
def test_each_member_trains_as_it_would_alone(name):
    """Three training steps of a 2-member ensemble leave each member where three steps of that member alone, with
    an optimizer of its own, on the same episodes leave it: through the shared optimizer (ProtoNet), the member's
    own task-by-task backward (MAML) and its own outer update (Reptile)."""
    ensemble = make(name, "algorithm.members=2").train()
    alone = [copy.deepcopy(m) for m in ensemble.members]
    shared = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    own = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in alone]
    for step in range(3):
        ep = episode(tasks=2, seed=step)
        training_step(ensemble, ep, shared, CPU, amp=False)
        for member, optimizer in zip(alone, own):
            training_step(member, ep, optimizer, CPU, amp=False)
    for member, reference in zip(ensemble.members, alone):
        for (key, value), expected in zip(member.state_dict().items(), reference.state_dict().values()):
            torch.testing.assert_close(value, expected, msg=key)
    moved = make(name, "algorithm.members=2").members[0].state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in ensemble.members[0].state_dict().items())


def test_a_run_with_members_trains_and_tests_the_ensemble(glyphs_root, tmp_path, monkeypatch):
    tiny = ["train.episodes=6", "train.val_every=3", "train.val_episodes=4", "eval.episodes=10", "logger=none"]
    small = ["encoder.hidden=8", "encoder.out_channels=8", f"dataset.root={glyphs_root}"]
    sizes = {}
    for members in (1, 3):
        run_dir = tmp_path / f"m{members}"
        code = call_cli([*tiny, *small, f"algorithm.members={members}", f"hydra.run.dir={run_dir}"], monkeypatch)
        assert code == 0
        results = json.loads((run_dir / "results.json").read_text())
        assert 0 < results["test/acc"] <= 1
        sizes[members] = results["model/parameters"]
    assert sizes[3] == 3 * sizes[1]
