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
