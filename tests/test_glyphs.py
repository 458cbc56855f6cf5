"""The embedded `glyphs` dataset: inventory, determinism, cache, splits and image properties."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from fewshot_exp.data import glyphs
from fewshot_exp.data.glyphs import GlyphsConfig
from fewshot_exp.data.imageset import Splits
from fewshot_exp.errors import UserError

SMALL = {"image_size": 16, "renderings": 2}


def small_cfg(root, **changes) -> GlyphsConfig:
    return dataclasses.replace(GlyphsConfig(), root=str(root), **{**SMALL, **changes})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[GlyphsConfig, Splits]:
    cfg = small_cfg(tmp_path_factory.mktemp("glyphs"))
    return cfg, glyphs.load_glyphs(cfg)


def all_splits(splits: Splits):
    return {"train": splits.train, "val": splits.val, "test": splits.test}


def alphabets_of(s) -> set[str]:
    return {name.split("/")[0] for name in s.class_names}


def test_inventory_size():
    inventory = glyphs.inventory()
    assert 20 <= len(inventory) <= 40
    assert 500 <= sum(map(len, inventory.values())) <= 1600
    assert all(glyphs.MIN_PER_ALPHABET <= len(chars) <= glyphs.MAX_PER_ALPHABET for chars in inventory.values())
    assert all(len(fonts) >= 2 for chars in inventory.values() for _, fonts in chars)
    assert {"Latin", "Greek", "Cyrillic", "Arrows", "Box_Drawing"} <= set(inventory)


def test_splits_are_disjoint(small):
    cfg, splits = small
    parts = all_splits(splits)
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(parts[a].class_names) & set(parts[b].class_names)
        assert not alphabets_of(parts[a]) & alphabets_of(parts[b])
    assert len(alphabets_of(splits.val)) == cfg.val_alphabets
    assert alphabets_of(splits.test) == glyphs.evaluation_alphabets(list(glyphs.inventory()))
    assert len(alphabets_of(splits.test)) == len(glyphs.inventory()) // glyphs.EVALUATION_EVERY
    n_classes = sum(s.n_classes for s in parts.values())
    assert n_classes == sum(map(len, glyphs.inventory().values()))


def test_images(small):
    cfg, splits = small
    for s in all_splits(splits).values():
        assert s.images.dtype == torch.uint8
        assert s.images.shape[1:] == (1, cfg.image_size, cfg.image_size)
        assert bool((s.counts == cfg.renderings).all())
        assert s.images.float().mean() < 0.25 * 255  # foreground bright on a dark background
        assert int(s.images.max()) == 255
        assert int(s.images.flatten(1).amax(1).min()) >= 64  # no blank image
        assert int(s.images[..., 0, :].max()) == 0 and int(s.images[..., :, -1].max()) == 0  # not clipped


def test_renderings_differ_and_characters_differ(small):
    cfg, splits = small
    for s in all_splits(splits).values():
        x = s.images.view(s.n_classes, cfg.renderings, -1).float()
        assert bool((x != x[:, :1]).any(2).any(1).all()), "some character has identical renderings"
        means = x.mean(1)
        distances = torch.cdist(means, means) + torch.eye(s.n_classes) * 1e9
        assert float(distances.min()) > 0, "two characters have identical renderings"


def test_deterministic_across_cache_dirs(small, tmp_path):
    cfg, splits = small
    again = glyphs.load_glyphs(small_cfg(tmp_path))
    for a, b in zip(all_splits(splits).values(), all_splits(again).values()):
        assert torch.equal(a.images, b.images) and a.class_names == b.class_names


def test_the_images_do_not_depend_on_the_number_of_rendering_processes(small, tmp_path, monkeypatch):
    cfg, splits = small  # rendered by one process per core
    monkeypatch.setattr(glyphs, "_workers", lambda: 3)
    again = glyphs.load_glyphs(small_cfg(tmp_path))
    for a, b in zip(all_splits(splits).values(), all_splits(again).values()):
        assert torch.equal(a.images, b.images) and a.class_names == b.class_names


def test_settings_change_the_data(small, tmp_path):
    cfg, splits = small
    other = glyphs.load_glyphs(small_cfg(tmp_path, generator_seed=1))
    assert other.train.class_names == splits.train.class_names
    assert not torch.equal(other.train.images, splits.train.images)
    assert glyphs.cache_path(small_cfg(tmp_path, generator_seed=1)) != glyphs.cache_path(small_cfg(tmp_path))


def test_cache_hit_does_not_regenerate(small, monkeypatch):
    cfg, splits = small
    path = glyphs.cache_path(cfg)
    assert path.is_file() and path.name.startswith("glyphs-")
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", path.name]  # no temporary files left behind

    def fail(settings):
        raise AssertionError("regenerated despite a valid cache")

    monkeypatch.setattr(glyphs, "generate", fail)
    assert torch.equal(glyphs.load_glyphs(cfg).test.images, splits.test.images)


@pytest.mark.parametrize("damage", [b"not a torch file", None])
def test_corrupt_cache_is_regenerated(small, tmp_path, damage):
    cfg, splits = small
    cfg = small_cfg(tmp_path)
    path = glyphs.cache_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(glyphs.cache_path(small[0]).read_bytes()[:1000] if damage is None else damage)
    assert torch.equal(glyphs.load_glyphs(cfg).train.images, splits.train.images)
    assert torch.load(path, weights_only=True)["settings"] == glyphs._settings(cfg)


def test_rotation_classes(small):
    cfg, splits = small
    rotated = glyphs.load_glyphs(dataclasses.replace(cfg, rotation_classes=True))
    assert rotated.train.n_classes == 4 * splits.train.n_classes
    assert rotated.val.class_names == splits.val.class_names and rotated.test.class_names == splits.test.class_names


@pytest.mark.parametrize(
    "changes, message",
    [({"renderings": 1}, "renderings"), ({"image_size": 4}, "image_size"), ({"val_alphabets": 100}, "val_alphabets")],
)
def test_bad_settings(small, changes, message):
    with pytest.raises(UserError, match=message):
        glyphs.load_glyphs(dataclasses.replace(small[0], **changes))


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cache"):
        glyphs.load_glyphs(small_cfg(blocker / "sub"))


def test_defaults_from_dict_config(glyphs_root):
    """The defaults, as the CLI composes them, build the full cache (shared with the CLI tests)."""
    cfg = OmegaConf.structured(GlyphsConfig(root=str(glyphs_root)))
    splits = glyphs.load_glyphs(cfg)
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert [s.n_classes for s in (splits.train, splits.val, splits.test)] == [844, 101, 500]
    for split in (splits.train, splits.val, splits.test):  # every k_shot up to 32 with the default 15 queries
        assert bool((split.counts == 50).all()) and split.min_per_class >= 32 + 15
