import io
import os

import pytest
import torch
from conftest import random_imageset

from fewshot_exp.data.episodes import EpisodeSampler, batch_bytes, check_shape
from fewshot_exp.data.imageset import ImageSet
from fewshot_exp.errors import UserError


def sampler(split, n=5, k=3, q=4, tasks=6, seed=0):
    return EpisodeSampler(split, n, k, q, tasks, torch.Generator().manual_seed(seed))


def image_ids(split, x):
    """Map each sampled image back to its index in the split (images are random, hence unique)."""
    flat = split.images.flatten(1).float() / 255
    return torch.cdist(x.flatten(1), flat).argmin(1)


def test_episode_shapes_and_labels():
    split = random_imageset(12, 10)
    ep = sampler(split).sample()
    assert ep.support_x.shape == (6, 15, 1, 28, 28) and ep.query_x.shape == (6, 20, 1, 28, 28)
    assert ep.support_x.dtype == torch.float32 and 0 <= ep.support_x.min() and ep.support_x.max() <= 1
    for t in range(6):
        assert torch.equal(ep.support_y[t].bincount(), torch.full((5,), 3))
        assert torch.equal(ep.query_y[t].bincount(), torch.full((5,), 4))


def test_batch_bytes_is_the_sampled_float_images():
    split = random_imageset(12, 10)
    ep = sampler(split).sample()
    sampled = sum(x.numel() * x.element_size() for x in (ep.support_x, ep.query_x))
    assert batch_bytes(split, 5, 3, 4, 6) == sampled == 6 * 5 * 7 * 28 * 28 * 4


def test_support_and_query_disjoint_and_classes_consistent():
    split = random_imageset(12, 10)
    ep = sampler(split, tasks=20).sample()
    for t in range(20):
        s_ids = image_ids(split, ep.support_x[t])
        q_ids = image_ids(split, ep.query_x[t])
        assert len(set(s_ids.tolist()) | set(q_ids.tolist())) == 15 + 20  # no image used twice
        s_cls, q_cls = split.labels[s_ids], split.labels[q_ids]
        # episode label k always means the same dataset class, in support and query
        for k in range(5):
            assert s_cls[ep.support_y[t] == k].unique().numel() == 1
            assert torch.equal(s_cls[ep.support_y[t] == k].unique(), q_cls[ep.query_y[t] == k].unique())
        assert s_cls.unique().numel() == 5


def test_same_seed_same_episodes_different_seed_different():
    split = random_imageset(12, 10)
    a, b, c = sampler(split, seed=3).sample(), sampler(split, seed=3).sample(), sampler(split, seed=4).sample()
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_all_classes_and_images_get_sampled():
    split = random_imageset(8, 6)
    ep = sampler(split, n=2, k=1, q=1, tasks=400).sample()
    seen = image_ids(split, torch.cat([ep.support_x, ep.query_x], 1).flatten(0, 1))
    assert seen.unique().numel() == 48


def test_uneven_class_sizes_never_pad():
    images = torch.randint(0, 256, (3 + 9 + 5, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0] * 3 + [1] * 9 + [2] * 5)
    from fewshot_exp.data.imageset import ImageSet

    split = ImageSet(images, labels, ["a", "b", "c"])
    ep = EpisodeSampler(split, 3, 1, 2, 50, torch.Generator().manual_seed(0)).sample()
    ids = image_ids(split, torch.cat([ep.support_x, ep.query_x], 1).flatten(0, 1))
    assert ids.max() < 17  # no index past the end or into another class's padding


@pytest.mark.parametrize(
    "n,k,q,match",
    [(13, 1, 1, r"n_way=13 is more than the 12 classes"), (5, 6, 5, r"k_shot \+ n_query = 6 \+ 5 is more than the 10")],
)
def test_shape_the_split_cannot_fill(n, k, q, match):
    with pytest.raises(UserError, match=match):
        sampler(random_imageset(12, 10), n=n, k=k, q=q)


def test_a_split_with_one_class_says_no_episode_fits():
    """The advice `use n_way <= 1` would itself be refused: a split of one class fits no episode."""
    one_class = ImageSet.from_class_lists([torch.zeros(5, 1, 4, 4, dtype=torch.uint8)], ["a"])
    with pytest.raises(UserError, match="the 1 classes of the val split; it needs at least 2 for any episode"):
        check_shape(one_class, "val", 2, 1, 1)


def test_cpu_memory_is_capped_by_a_cgroup_limit(tmp_path, monkeypatch):
    from fewshot_exp import memory

    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    monkeypatch.setattr(memory, "CGROUP_LIMITS", (str(tmp_path / "missing"), str(limit)))
    assert memory.device_memory(torch.device("cpu")) == 2**30
    limit.write_text("max\n")  # cgroup v2 without a limit: the physical RAM
    assert memory.device_memory(torch.device("cpu")) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_shape_that_does_not_fit_names_the_values_that_would():
    split = random_imageset(30, 20)  # Omniglot's 20 images per class
    with pytest.raises(
        UserError, match=r"8 \+ 15 is more than the 20 images .*; use episode.n_query=12 \(or a k_shot of at most 5\)$"
    ):
        check_shape(split, "train", 5, 8, 15)
    with pytest.raises(UserError, match=r"use train.episode.n_query=1 \(or a k_shot of at most 5\)$"):
        check_shape(split, "train", 5, 19, 15, "train.episode")
    with pytest.raises(UserError, match=r"use a k_shot of at most 5$"):
        check_shape(split, "test", 5, 20, 15)
    with pytest.raises(UserError, match=r"use episode.n_query=10 with a k_shot of at most 10$"):
        check_shape(split, "test", 5, 25, 25)
    check_shape(split, "train", 5, 8, 12)  # the advice fits


def test_progress_bars_refresh_rarely_in_a_log_file(monkeypatch):
    from fewshot_exp import progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    assert progress.progress(range(3), file=io.StringIO()).mininterval == progress.LOG_INTERVAL_S
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    assert progress.progress(range(3), file=io.StringIO()).mininterval < 1
    assert progress.progress(range(3), show=False, file=io.StringIO()).disable


def lettered_split(sizes: dict[str, int], per_class: int = 4) -> ImageSet:
    """Classes named alphabet/character, `sizes[alphabet]` characters each."""
    names = [f"{alphabet}/c{i}" for alphabet, count in sizes.items() for i in range(count)]
    images = [torch.full((per_class, 1, 8, 8), i, dtype=torch.uint8) for i in range(len(names))]
    return ImageSet.from_class_lists(images, names)


def test_within_alphabet_episodes_take_every_class_from_one_alphabet():
    split = lettered_split({"Greek": 6, "Korean": 9, "Tiny": 3})  # Tiny has too few classes for 5-way
    drawn = EpisodeSampler(split, 5, 1, 2, 200, torch.Generator().manual_seed(0), within_alphabet=True).draw(200)
    alphabets = [{split.class_names[c].partition("/")[0] for c in split.labels[task[:, 0]].tolist()} for task in drawn]
    assert all(len(a) == 1 for a in alphabets)
    assert {a.pop() for a in alphabets} == {"Greek", "Korean"}  # both eligible alphabets are drawn, Tiny never
    assert all(len(set(split.labels[task[:, 0]].tolist())) == 5 for task in drawn)  # 5 distinct classes


def test_within_alphabet_needs_alphabets_large_enough():
    with pytest.raises(UserError, match="no training alphabet has 10 classes"):
        EpisodeSampler(lettered_split({"Greek": 6, "Korean": 6}), 10, 1, 2, 1, torch.Generator(), within_alphabet=True)
    with pytest.raises(UserError, match="needs classes named alphabet/character"):
        EpisodeSampler(random_imageset(12, 10), 5, 1, 2, 1, torch.Generator(), within_alphabet=True)
