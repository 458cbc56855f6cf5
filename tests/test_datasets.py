"""The image datasets (CIFAR-FS, FC100, random CIFAR-100, mini-ImageNet, folder) and the cross-domain test sets
(SVHN, digits), each read from tiny fakes written in its real on-disk format; augmentation and normalisation."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import call_cli, random_imageset
from omegaconf import OmegaConf
from PIL import Image

from fewshot_exp import plugins
from fewshot_exp.data import DATASETS, TEST_SETS, load_dataset
from fewshot_exp.data.augment import Augment, AugmentConfig, Normalize
from fewshot_exp.data.common import merge, split_lists
from fewshot_exp.data.crossdomain import cross_domain_test
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.errors import UserError

CIFAR_CLASSES = sorted(c for s in split_lists("cifar_fs").values() for c in s)  # CIFAR-100's fine label names
MINI = split_lists("miniimagenet")
TINY = [
    "logger=none",
    "train.episodes=3",
    "train.val_every=3",
    "train.val_episodes=2",
    "eval.episodes=4",
    "encoder.hidden=8",
    "encoder.out_channels=8",
    "episode.n_way=3",
    "episode.k_shot=1",
    "episode.n_query=1",
]


plugins.load()


def node(name: str, **values):
    """The `dataset` config node of the option `dataset=<name>` with `values` set."""
    return OmegaConf.merge(OmegaConf.structured(plugins.SCHEMAS["dataset"][name]), values)


def class_images(label: int, n: int, size: int, channels: int = 3) -> np.ndarray:
    """[n, size, size, channels] uint8: class `label` has its own mean colour, so classes differ."""
    rng = np.random.default_rng(label)
    base = rng.integers(0, 256, channels)
    return np.clip(base + rng.integers(-40, 40, (n, size, size, channels)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """torchvision's cifar-100-python/{train,test,meta}: 3 train + 1 test image per class, real class names."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name, per_class in (("train", 3), ("test", 1)):
        images = np.concatenate([class_images(c, per_class, 32) for c in range(100)])  # [N, 32, 32, 3]
        labels = [c for c in range(100) for _ in range(per_class)]
        order = np.random.default_rng(1).permutation(len(labels))  # the real files are not sorted by class
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)[order]
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "fine_labels": [labels[i] for i in order]}, f)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": CIFAR_CLASSES}, f)
    return root


@pytest.fixture(scope="module")
def mini_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini-cache")
    for split, wnids in MINI.items():
        images = np.concatenate([class_images(i, 2, 84) for i in range(len(wnids))])
        class_dict = {w: [2 * i, 2 * i + 1] for i, w in enumerate(wnids)}
        with (root / f"mini-imagenet-cache-{split}.pkl").open("wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
    return root


@pytest.fixture(scope="module")
def mini_images(tmp_path_factory) -> Path:
    """images/<wnid><8 digits>.jpg for the real classes (2 each, 20 px) and Ravi's CSVs."""
    root = tmp_path_factory.mktemp("mini-images")
    (root / "images").mkdir()
    for split, wnids in MINI.items():
        rows = ["filename,label"]
        for i, wnid in enumerate(wnids):
            for j, image in enumerate(class_images(i, 2, 20)):
                name = f"{wnid}{j:08d}.jpg"
                Image.fromarray(image).save(root / "images" / name)
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def svhn_root(tmp_path_factory) -> Path:
    """test_32x32.mat as torchvision reads it: X [32, 32, 3, N], y [N, 1] with 10 meaning the digit 0."""
    root = tmp_path_factory.mktemp("svhn")
    labels = np.repeat(np.arange(1, 11), 3)
    images = np.concatenate([class_images(int(c), 1, 32) for c in labels])  # [N, 32, 32, 3]
    scipy.io.savemat(root / "test_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None]})
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    for c in range(10):
        (root / f"class{c}").mkdir()
        for j, image in enumerate(class_images(c, 3, 12)):
            Image.fromarray(image).save(root / f"class{c}" / f"{j}.{'png' if j % 2 else 'jpg'}")
    (root / "notes.txt").write_text("not a class")
    return root


def assert_disjoint(splits) -> None:
    names = [set(s.class_names) for s in (splits.train, splits.val, splits.test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_cifar_fs_is_the_published_split(cifar_root):
    splits = DATASETS["cifar_fs"](node("cifar_fs", root=str(cifar_root)))
    assert (splits.train.n_classes, splits.val.n_classes, splits.test.n_classes) == (64, 16, 20)
    assert_disjoint(splits)
    assert "whale" in splits.test.class_names and "dolphin" in splits.train.class_names
    assert splits.train.images.shape == (64 * 4, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    # Every image lands in its own class: the fake's class c has mean colour rng(c), 40 levels of noise.
    whale = splits.test.images[splits.test.labels == splits.test.class_names.index("whale")].float()
    expected = np.random.default_rng(CIFAR_CLASSES.index("whale")).integers(0, 256, 3)
    assert torch.allclose(whale.mean((0, 2, 3)), torch.tensor(expected, dtype=torch.float), atol=12)


def test_fc100_splits_by_superclass(cifar_root):
    splits = DATASETS["fc100"](node("fc100", root=str(cifar_root)))
    assert (splits.train.n_classes, splits.val.n_classes, splits.test.n_classes) == (60, 20, 20)
    assert_disjoint(splits)
    groups = split_lists("fc100")
    assert (len(groups["train"]), len(groups["val"]), len(groups["test"])) == (12, 4, 4)
    assert set(splits.test.class_names) == {c for members in groups["test"].values() for c in members}
    assert set(groups["test"]) == {"aquatic_mammals", "insects", "medium_mammals", "people"}


def test_cifar100_random_is_seeded(cifar_root):
    a = DATASETS["cifar100_random"](node("cifar100_random", root=str(cifar_root), split_seed=1))
    b = DATASETS["cifar100_random"](node("cifar100_random", root=str(cifar_root), split_seed=1))
    c = DATASETS["cifar100_random"](node("cifar100_random", root=str(cifar_root), split_seed=2))
    assert (a.train.n_classes, a.val.n_classes, a.test.n_classes) == (80, 10, 10)
    assert_disjoint(a)
    assert a.test.class_names == b.test.class_names != c.test.class_names
    with pytest.raises(UserError, match="summing to 100"):
        DATASETS["cifar100_random"](node("cifar100_random", root=str(cifar_root), split_classes=[80, 10, 5]))


def test_cifar_missing_files_are_named(tmp_path):
    with pytest.raises(UserError, match=r"cifar-100-python/train not found"):
        DATASETS["cifar_fs"](node("cifar_fs", root=str(tmp_path)))
    with pytest.raises(UserError, match="does not exist"):
        DATASETS["cifar_fs"](node("cifar_fs", root=str(tmp_path / "nope")))


@pytest.mark.parametrize("form", ["cache", "images+csv", "images"])
def test_miniimagenet_forms_give_the_ravi_split(form, mini_cache, mini_images, tmp_path):
    root = mini_cache if form == "cache" else mini_images
    if form == "images":  # only the images: the shipped wnid lists split them
        (tmp_path / "images").symlink_to(mini_images / "images")
        root = tmp_path
    splits = DATASETS["miniimagenet"](node("miniimagenet", root=str(root)))
    for split, wnids in MINI.items():
        assert sorted(getattr(splits, split).class_names) == sorted(wnids)
    assert splits.train.images.shape == (64 * 2, 3, 84, 84)
    assert_disjoint(splits)


def test_miniimagenet_csvs_must_not_share_a_class(mini_images, tmp_path):
    (tmp_path / "images").symlink_to(mini_images / "images")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text((mini_images / f"{split}.csv").read_text())
    train_row = (mini_images / "train.csv").read_text().splitlines()[1]
    with (tmp_path / "val.csv").open("a") as f:
        f.write(train_row + "\n")  # a training image (and class) listed in val.csv too
    with pytest.raises(UserError, match=f"class '{train_row.split(',')[1]}' is in both the train and val splits"):
        DATASETS["miniimagenet"](node("miniimagenet", root=str(tmp_path)))


def test_miniimagenet_bad_layouts(mini_cache, tmp_path):
    with pytest.raises(UserError, match="mini-imagenet-cache-train.pkl"):
        DATASETS["miniimagenet"](node("miniimagenet", root=str(tmp_path)))
    (tmp_path / "mini-imagenet-cache-train.pkl").symlink_to(mini_cache / "mini-imagenet-cache-train.pkl")
    with pytest.raises(UserError, match="mini-imagenet-cache-val.pkl not found"):
        DATASETS["miniimagenet"](node("miniimagenet", root=str(tmp_path)))


def test_folder_split_by_ratio_and_by_files(folder_root, tmp_path):
    splits = DATASETS["folder"](node("folder", root=str(folder_root), image_size=16, channels=1, split=[0.6, 0.2, 0.2]))
    assert (splits.train.n_classes, splits.val.n_classes, splits.test.n_classes) == (6, 2, 2)
    assert splits.train.images.shape == (18, 1, 16, 16)
    assert_disjoint(splits)
    for name, classes in (
        ("a.txt", "class0\nclass1\n\nclass2  # comment\n"),
        ("b.txt", "class3\nclass4"),
        ("c.txt", "class5"),
    ):
        (tmp_path / name).write_text(classes)
    files = {"train": str(tmp_path / "a.txt"), "val": str(tmp_path / "b.txt"), "test": str(tmp_path / "c.txt")}
    splits = DATASETS["folder"](node("folder", root=str(folder_root), image_size=16, split_files=files))
    assert splits.train.class_names == ["class0", "class1", "class2"] and splits.test.class_names == ["class5"]
    assert splits.train.images.shape[1] == 3
    (tmp_path / "c.txt").write_text("class5\nclass42\n")
    with pytest.raises(UserError, match="'class42', which has no image folder"):
        DATASETS["folder"](node("folder", root=str(folder_root), split_files=files))
    (tmp_path / "c.txt").write_text("class5\n")
    (tmp_path / "a.txt").write_text("class0\nclass1\nclass0\n")  # one class twice: two labels, the same images
    with pytest.raises(UserError, match="the train split of .* lists class 'class0' twice"):
        DATASETS["folder"](node("folder", root=str(folder_root), split_files=files))
    with pytest.raises(UserError, match="summing to 1"):
        DATASETS["folder"](node("folder", root=str(folder_root), split=[0.7, 0.2, 0.2]))
    with pytest.raises(UserError, match="leaves a split with no class"):
        DATASETS["folder"](node("folder", root=str(folder_root), split=[0.98, 0.01, 0.01]))


def test_svhn_and_digits_are_all_test_classes(svhn_root):
    svhn = TEST_SETS["svhn"](node("svhn", root=str(svhn_root)))
    assert svhn.class_names == [str(d) for d in range(10)] and svhn.counts.tolist() == [3] * 10
    zero = svhn.images[svhn.labels == 0].float().mean((0, 2, 3))  # SVHN's label 10 is the digit 0
    assert torch.allclose(zero, torch.tensor(np.random.default_rng(10).integers(0, 256, 3), dtype=torch.float), atol=12)
    digits = TEST_SETS["digits"](node("digits", image_size=28))
    assert digits.images.shape == (1797, 1, 28, 28) and digits.n_classes == 10
    assert digits.images.float().mean() < 80  # bright strokes on a black background, like the character datasets
    with pytest.raises(UserError, match="test_32x32.mat not found"):
        TEST_SETS["svhn"](node("svhn", root=str(svhn_root / "..")))


def test_cross_domain_refuses_a_test_set_of_the_training_images(cifar_root):
    from fewshot_exp.data.crossdomain import check_no_training_classes

    train = DATASETS["cifar_fs"](node("cifar_fs", root=str(cifar_root))).train
    fc100 = merge(DATASETS["fc100"](node("fc100", root=str(cifar_root))))
    cfg = OmegaConf.create({"dataset": {"name": "cifar_fs"}, "eval": {"dataset": "fc100", "dataset_root": None}})
    with pytest.raises(UserError, match="eval.dataset=fc100 holds 64 of the training split's classes"):
        check_no_training_classes(cfg, train, fc100)
    folder = {"dataset": {"name": "folder", "root": "/a"}, "eval": {"dataset": "folder", "dataset_root": "/b"}}
    check_no_training_classes(OmegaConf.create(folder), train, fc100)  # another folder: other images, same names


def test_cross_domain_test_set_takes_the_training_format(svhn_root):
    train = random_imageset(5, 4, size=28, channels=1)
    cfg = OmegaConf.create({"dataset": {"name": "glyphs"}, "eval": {"dataset": "svhn", "dataset_root": str(svhn_root)}})
    test = cross_domain_test(cfg, train)
    assert test.images.shape == (30, 1, 28, 28) and test.n_classes == 10
    cfg = OmegaConf.create({"dataset": {"name": "glyphs"}, "eval": {"dataset": "digits", "dataset_root": None}})
    assert cross_domain_test(cfg, random_imageset(5, 4, size=32, channels=3)).images.shape == (1797, 3, 32, 32)


def test_normalisation_uses_the_training_split(cifar_root):
    splits = DATASETS["cifar_fs"](node("cifar_fs", root=str(cifar_root)))
    norm = Normalize.of(splits.train)
    x = norm(splits.train.images.float() / 255)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    sampler = EpisodeSampler(splits.test, 5, 1, 1, 2, torch.Generator().manual_seed(0), normalize=norm)
    raw = EpisodeSampler(splits.test, 5, 1, 1, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(sampler.sample().query_x, norm(raw.sample().query_x))


def augment_cfg(**values):
    return OmegaConf.merge(OmegaConf.structured(AugmentConfig), {"enabled": True, **values})


def test_augment_flip_is_per_image_and_seeded():
    x = torch.rand(64, 3, 8, 8)
    out = Augment(augment_cfg(flip=True))(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)])
    kept = torch.tensor([torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)])
    assert bool((flipped ^ kept).all()) and 10 < int(flipped.sum()) < 54
    again = Augment(augment_cfg(flip=True))(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augment_natural_and_character_settings_stay_in_range():
    x = torch.rand(16, 3, 12, 12)
    natural = augment_cfg(crop_scale=[0.5, 1.0], flip=True, brightness=0.4, contrast=0.4, saturation=0.4)
    out = Augment(natural)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)
    grey = torch.zeros(4, 1, 12, 12)
    grey[:, :, 4:8, 4:8] = 1.0
    out = Augment(augment_cfg(rotate=10, translate=0.1, scale=[0.9, 1.1]))(grey, torch.Generator().manual_seed(1))
    assert out.shape == grey.shape and abs(float(out.sum() - grey.sum())) < 0.3 * float(grey.sum())
    assert torch.equal(Augment(augment_cfg())(x, torch.Generator().manual_seed(0)), x)  # nothing switched on
    with pytest.raises(UserError, match="crop_scale must be"):
        Augment(augment_cfg(crop_scale=[0.5]))


def test_augment_stroke_thickness_elastic_and_shear():
    """Thickness blends each image towards its dilation (never below it) or erosion (never above it); the elastic
    field is smooth and bounded by its setting; shear moves strokes and keeps their mass."""
    strokes = torch.zeros(32, 1, 16, 16)
    strokes[:, :, 4:12, 7:9] = 1.0  # a vertical bar
    out = Augment(augment_cfg(thickness=1.0))(strokes, torch.Generator().manual_seed(0))
    thicker = (out >= strokes).flatten(1).all(1)
    thinner = (out <= strokes).flatten(1).all(1)
    assert bool((thicker | thinner).all()) and 5 < int((out.sum((1, 2, 3)) > strokes.sum((1, 2, 3))).sum()) < 27
    elastic = Augment(augment_cfg(elastic=0.05))
    field = elastic.displacement(torch.rand(8, 32, generator=torch.Generator().manual_seed(0)), (28, 28))
    assert field.shape == (8, 28, 28, 2) and 0.05 < float(field.abs().max()) <= 0.1 * 1.3  # 5% of 2 units, bicubic
    assert float((field[:, 1:] - field[:, :-1]).abs().max()) < 0.04  # smooth: neighbours differ by a fraction of 0.2
    sheared = Augment(augment_cfg(shear=30.0))(strokes, torch.Generator().manual_seed(0))
    assert not torch.allclose(sheared, strokes)
    torch.testing.assert_close(sheared.sum((1, 2, 3)), strokes.sum((1, 2, 3)), rtol=0.1, atol=0)
    with pytest.raises(UserError, match=r"elastic must be in \[0, 1\]"):
        Augment(augment_cfg(elastic=2.0))


def test_augmented_sampler_resumes_bit_exact():
    split = random_imageset(6, 5, size=12, channels=3)
    augment = Augment(augment_cfg(crop_scale=[0.5, 1.0], flip=True, brightness=0.4))
    sampler = EpisodeSampler(split, 3, 2, 2, 2, torch.Generator().manual_seed(0), augment=augment)
    sampler.sample()
    state = sampler.generator.get_state()
    first = sampler.sample().support_x
    sampler.generator.set_state(state)
    assert torch.equal(sampler.sample().support_x, first)


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset=cifar_fs", "dataset.root={cifar}"],
        ["dataset=fc100", "dataset.root={cifar}", "dataset.image_size=16"],
        ["dataset=cifar100_random", "dataset.root={cifar}", "dataset.image_size=16", "dataset.augment.enabled=false"],
        ["dataset=miniimagenet", "dataset.root={mini}", "dataset.image_size=20", "episode.n_way=2"],
        ["dataset=folder", "dataset.root={folder}", "dataset.image_size=16", "dataset.channels=1", "episode.n_way=2"],
        [
            "dataset=folder",
            "dataset.root={folder}",
            "dataset.image_size=16",
            "episode.n_way=2",
            "eval.dataset=svhn",
            "eval.dataset_root={svhn}",
        ],
    ],
    ids=["cifar_fs", "fc100", "cifar100_random", "miniimagenet", "folder", "folder->svhn"],
)
def test_each_dataset_trains_through_the_cli(
    overrides, cifar_root, mini_cache, folder_root, svhn_root, tmp_path, monkeypatch, capfd
):
    places = {"cifar": cifar_root, "mini": mini_cache, "folder": folder_root, "svhn": svhn_root}
    argv = [*TINY, *(o.format(**places) for o in overrides), f"hydra.run.dir={tmp_path}"]
    code = call_cli(argv, monkeypatch)
    assert code == 0, capfd.readouterr().err[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test/episodes"] == 4 and 0 <= results["test/acc"] <= 1


def test_cross_domain_digits_through_the_cli(folder_root, tmp_path, monkeypatch, capfd):
    """Grey 16 px training images, and the 8 px digits converted to that as the test set."""
    argv = [
        *TINY,
        "dataset=folder",
        f"dataset.root={folder_root}",
        "dataset.image_size=16",
        "dataset.channels=1",
        "episode.n_way=2",
        "eval.dataset=digits",
        f"hydra.run.dir={tmp_path}",
    ]
    assert call_cli(argv, monkeypatch) == 0, capfd.readouterr().err[-2000:]
    assert json.loads((tmp_path / "results.json").read_text())["test/episodes"] == 4
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.eval.dataset == "digits" and config.dataset.name == "folder"


def test_test_only_sets_cannot_train():
    with pytest.raises(UserError, match="eval.dataset=digits"):
        load_dataset(node("digits"))


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from fewshot_exp.data.common import decode_images

    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))  # a microscope's 16-bit grey
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    grey, rgb = decode_images([tmp_path / "ramp.png"], "L", 32), decode_images([tmp_path / "ramp.png"], "RGB", 32)
    assert torch.equal(grey[0, 0], torch.from_numpy((ramp >> 8).astype(np.uint8)))  # Pillow alone: 97% at 255
    assert torch.equal(rgb[0], grey[0].expand(3, -1, -1))


def test_an_image_past_pillows_decompression_bomb_guard_is_one_line(tmp_path):
    from PIL import Image

    from fewshot_exp.data.common import decode_images

    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")  # 225 M pixels, twice Pillow's limit: refused
    with pytest.raises(UserError, match=r"bomb.png is refused by Pillow's decompression-bomb guard \(Image size"):
        decode_images([tmp_path / "bomb.png"], "L", 28)
