import os
import pickle

import pytest
import torch

from fewshot_exp.checkpoint import load_checkpoint, save_checkpoint
from fewshot_exp.errors import UserError


def test_roundtrip(tmp_path):
    state = {"algorithm": {"w": torch.arange(4.0)}, "episode": 7, "config": "seed: 0\n"}
    save_checkpoint(tmp_path / "best.pt", state)
    back = load_checkpoint(tmp_path / "best.pt")
    assert torch.equal(back["algorithm"]["w"], state["algorithm"]["w"]) and back["episode"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.pt", {"episode": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last.pt", {"episode": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt", needs=("episode",))["episode"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    save_checkpoint(tmp_path / "best.pt", {"algorithm": {"w": torch.randn(100)}})
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "best.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"best.pt is unreadable") as e:
        load_checkpoint(tmp_path / "best.pt")
    assert "\n" not in str(e.value)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_with_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "fewshot-exp-checkpoint-v1", "x": Evil()}, f)
    with pytest.raises(UserError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a fewshot-exp checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def cpu_sampler(seed: int = 0):
    from conftest import random_imageset

    from fewshot_exp.data.episodes import EpisodeSampler

    return EpisodeSampler(random_imageset(6, 8), 3, 2, 2, 2, torch.Generator().manual_seed(seed))


def test_rng_state_round_trips_and_leaves_cuda_alone_on_a_cpu_run(monkeypatch):
    from fewshot_exp.resume import rng_state, set_rng_state

    def no_cuda(*args):
        raise AssertionError("a CPU run touched CUDA's random state")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU node running device=cpu
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    sampler = cpu_sampler()
    state = rng_state(sampler)
    assert state["device"] == "cpu" and "cuda" not in state
    first = sampler.sample().support_x, torch.rand(3)
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)}, sampler)  # a CUDA state: not for a CPU run
    again = sampler.sample().support_x, torch.rand(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_resuming_a_checkpoint_of_another_device_kind_is_a_user_error(tmp_path):
    from fewshot_exp.resume import check_resume_device, rng_state

    state = {"rng": rng_state(cpu_sampler())}
    check_resume_device(state, torch.device("cpu"), tmp_path / "last.pt")  # same kind: fine
    with pytest.raises(UserError, match="written by a run on cpu and this one is on cuda"):
        check_resume_device(state, torch.device("cuda"), tmp_path / "last.pt")
