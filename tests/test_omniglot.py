"""Omniglot loader and the official one-shot runs, on the real files (small1/small2 and run01..run10)."""

from __future__ import annotations

import os
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fewshot_exp.data.omniglot import Background, OmniglotConfig, load_omniglot
from fewshot_exp.errors import UserError
from fewshot_exp.lake_runs import lake_runs_error, load_lake_runs

DATA = Path(os.environ.get("FEWSHOT_OMNIGLOT_DIR", Path(__file__).resolve().parents[2] / "shared/data/omniglot"))
SMALL1 = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
SMALL2_ONLY = ("Japanese_(katakana)", "Sanskrit", "Tagalog")  # small2 also has Greek and Latin


def config(root, **overrides):
    return OmegaConf.structured(OmniglotConfig(root=None if root is None else str(root), **overrides))


def alphabets(s) -> set[str]:
    return {name.split("/")[0] for name in s.class_names}


def user_error(fn, *args) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def data() -> Path:
    if not (DATA / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot data not found at {DATA} (set FEWSHOT_OMNIGLOT_DIR)")
    return DATA


@pytest.fixture(scope="module")
def small1(data):
    return load_omniglot(config(data, background=Background.small1))


@pytest.fixture(scope="module")
def unzipped(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("omniglot")
    for name in ("images_background_small1", "images_background_small2"):
        with zipfile.ZipFile(data / f"{name}.zip") as zf:
            zf.extractall(root)
    return root


def test_small1_splits_by_alphabet(small1):
    assert alphabets(small1.train) == set(SMALL1[:3])  # the last val_alphabets=2 (sorted) are validation
    assert alphabets(small1.val) == set(SMALL1[3:])
    train_characters = {name.split("@")[0] for name in small1.train.class_names}
    assert not train_characters & set(small1.val.class_names)
    assert len(train_characters) + small1.val.n_classes == 136  # characters in small1


def test_every_character_has_20_drawings(small1):
    for s in (small1.train, small1.val, small1.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 28, 28)
        assert s.counts.tolist() == [20] * s.n_classes


def test_rotation_classes_are_rotated_originals(small1):
    train = small1.train
    assert train.n_classes == 4 * 70
    index = {name: c for c, name in enumerate(train.class_names)}

    def images(name):
        c = index[name]
        return train.images[int(train.offsets[c]) : int(train.offsets[c] + train.counts[c])]

    for name in (n for n in train.class_names if "@" not in n):
        for k in (1, 2, 3):
            assert torch.equal(images(f"{name}@rot{90 * k}"), torch.rot90(images(name), k, dims=(2, 3)))


def test_foreground_is_bright(small1):
    x = small1.train.images.float()
    assert x.max() == 255 and x.mean() < 40  # thin bright strokes on a dark background
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    assert border.mean() < 5


def test_test_alphabets_are_disjoint_from_background(small1):
    assert alphabets(small1.test) == set(SMALL2_ONLY)  # no images_evaluation here: small2's own alphabets
    background = torch.cat([small1.train.images, small1.val.images])
    seen = {bytes(img.numpy()) for img in background}
    assert not any(bytes(img.numpy()) in seen for img in small1.test.images)
    assert small1.test.n_classes == 156 - 50  # small2 has 156 characters, 50 of them Greek/Latin


def test_small2_background(data):
    s = load_omniglot(config(data, background=Background.small2, rotation_classes=False))
    assert alphabets(s.train) | alphabets(s.val) == {"Greek", "Latin", *SMALL2_ONLY}
    assert alphabets(s.test) == {"Balinese", "Early_Aramaic", "Korean"}
    assert s.train.n_classes + s.val.n_classes == 156 and "@" not in "".join(s.train.class_names)


def test_zip_and_folder_give_identical_tensors(small1, unzipped):
    from_folder = load_omniglot(config(unzipped, background=Background.small1))
    for a, b in ((small1.train, from_folder.train), (small1.val, from_folder.val), (small1.test, from_folder.test)):
        assert a.class_names == b.class_names
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_image_size(data):
    s = load_omniglot(config(data, background=Background.small1, image_size=105, rotation_classes=False))
    assert s.train.images.shape[1:] == (1, 105, 105)
    assert set(s.train.images.unique().tolist()) == {0, 255}  # unresized: the binary drawings, inverted


def test_lake_runs(data):
    runs = load_lake_runs(data / "one_shot_runs", 28)
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 11)]
    for run in runs:
        assert run.support.shape == run.query.shape == (20, 1, 28, 28) and run.support.dtype == torch.uint8
        assert run.query_labels.dtype == torch.long and run.query_labels.shape == (20,)
        expected = {}
        for line in (data / "one_shot_runs" / run.name / "class_labels.txt").read_text().split():
            if "/test/" in line:
                item = int(line[-6:-4])
            else:
                expected[item] = int(line[-6:-4])
        assert run.query_labels.tolist() == [expected[i] - 1 for i in range(1, 21)]
        assert sorted(run.query_labels.tolist()) == list(range(20))
        assert run.support.float().mean() < 40 and run.query.float().mean() < 40  # same inversion as training


def test_lake_runs_errors(tmp_path):
    assert "does not exist" in user_error(load_lake_runs, tmp_path / "missing", 28)
    assert "no one-shot runs" in user_error(load_lake_runs, tmp_path, 28)


def test_root_errors(tmp_path):
    assert "dataset.root" in user_error(load_omniglot, config(None))
    assert "does not exist" in user_error(load_omniglot, config(tmp_path / "missing"))
    assert "images_background.zip not found" in user_error(load_omniglot, config(tmp_path))  # empty folder


def test_corrupt_files(tmp_path):
    (tmp_path / "images_background_small1.zip").write_bytes(os.urandom(1000))
    assert "not a valid zip" in user_error(load_omniglot, config(tmp_path, background=Background.small1))
    (tmp_path / "images_background_small1.zip").unlink()
    (tmp_path / "images_background_small1" / "README").mkdir(parents=True)
    message = user_error(load_omniglot, config(tmp_path, background=Background.small1))
    assert "no Omniglot images" in message
    with zipfile.ZipFile(tmp_path / "images_background_small2.zip", "w") as zf:
        zf.writestr("images_background_small2/Greek/character01/0394_01.png", b"not a png")
    assert "cannot decode" in user_error(load_omniglot, config(tmp_path, background=Background.small2))


def test_missing_test_alphabets(data, unzipped, tmp_path):
    (tmp_path / "images_background").symlink_to(unzipped / "images_background_small1")
    (tmp_path / "images_background_small1.zip").symlink_to(data / "images_background_small1.zip")
    assert "images_evaluation.zip not found" in user_error(load_omniglot, config(tmp_path))  # full: no stand-in
    message = user_error(load_omniglot, config(tmp_path, background=Background.small1))
    assert "images_evaluation.zip (or images_background_small2.zip" in message


def test_download_offline_is_a_user_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    monkeypatch.setattr("torchvision.datasets.omniglot.download_and_extract_archive", offline)
    for background in (Background.full, Background.small1):
        message = user_error(load_omniglot, config(tmp_path / "new", background=background, download=True))
        assert "could not download" in message and "no network" in message


def test_cross_domain_omniglot_tests_on_the_characters_not_their_rotations(data, tmp_path):
    """eval.dataset=omniglot pools all its classes as test classes; the rotated copies that omniglot.yaml adds to
    training (rotation_classes: true) are not among them."""
    from conftest import random_imageset

    from fewshot_exp.data.crossdomain import cross_domain_test

    root = tmp_path / "omniglot"  # the full set's two file names, standing in by the small zips
    root.mkdir()
    (root / "images_background.zip").symlink_to(data / "images_background_small1.zip")
    (root / "images_evaluation.zip").symlink_to(data / "images_background_small2.zip")
    cfg = OmegaConf.create({"dataset": {"name": "glyphs"}, "eval": {"dataset": "omniglot", "dataset_root": str(root)}})
    test = cross_domain_test(cfg, random_imageset(5, 4, size=28))
    assert not [c for c in test.class_names if "@rot" in c]
    assert test.n_classes > 100 and test.images.shape[1:] == (1, 28, 28)


def test_lake_runs_take_the_model_s_channels(data):
    """An RGB model is scored on the grey runs repeated to 3 channels: a 3-channel Conv-4 whose first filters
    are the 1-channel one's split in thirds makes the same predictions, hence the same errors."""
    from fewshot_exp.algorithms.protonet import ProtoNet
    from fewshot_exp.distances import Distance
    from fewshot_exp.encoders.conv4 import Conv4

    runs = load_lake_runs(data / "one_shot_runs", 28)[:2]
    torch.manual_seed(0)
    grey = ProtoNet(Conv4(in_channels=1, hidden=8, out_channels=8), Distance("l2"))
    rgb = ProtoNet(Conv4(in_channels=3, hidden=8, out_channels=8), Distance("l2"))
    state = grey.state_dict()
    state["encoder.layers.0.0.weight"] = state["encoder.layers.0.0.weight"].repeat(1, 3, 1, 1) / 3
    rgb.load_state_dict(state)
    cpu = torch.device("cpu")
    errors = lake_runs_error(rgb, runs, cpu, channels=3)
    assert errors == lake_runs_error(grey, runs, cpu) and len(errors) == 3  # the mean and one per run
