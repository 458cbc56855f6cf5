"""Test-time augmentation (`eval.tta`, fewshot_exp/tta.py): views as extra shots, pooled query predictions. The
pooling formula is checked in float64; the evaluations compare evaluate() with itself, in the default float32
channels_last Conv-4 that eval runs."""

import math

import pytest
import torch
from conftest import random_imageset
from omegaconf import OmegaConf

from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.build import tta_views
from fewshot_exp.data.augment import Augment, AugmentConfig
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.errors import UserError
from fewshot_exp.evaluate import evaluate
from fewshot_exp.lake_runs import LakeRun, lake_runs_error
from fewshot_exp.tta import Views

CHARACTER = {"enabled": False, "rotate": 10.0, "shear": 10.0, "translate": 0.1, "elastic": 0.03, "thickness": 0.5}


def views(n: int, seed: int = 0, **settings) -> Views:
    cfg = OmegaConf.merge(OmegaConf.structured(AugmentConfig), {**CHARACTER, **settings})
    return Views(Augment(cfg), n, seed)


class Unchanged:
    """An augmentation that returns its images as they are, drawing nothing."""

    def __call__(self, x, generator):
        return x.clone()


def model(split) -> ProtoNet:
    torch.manual_seed(0)
    protonet = ProtoNet(Conv4(1, 8, 8), Distance("l2"))
    protonet(EpisodeSampler(split, 5, 2, 3, 4, torch.Generator().manual_seed(9)).sample())  # BN stats off init
    return protonet


def test_views_are_extra_shots_and_each_query_pools_its_own():
    raw = EpisodeSampler(random_imageset(6, 6, size=16), 3, 2, 2, 2, torch.Generator().manual_seed(0)).sample()
    tta = views(3)
    episode = tta.episode(raw, None)
    assert episode.support_x.shape == (2, 3 * 2 * 4, 1, 16, 16) and episode.query_x.shape == (2, 3 * 2 * 4, 1, 16, 16)
    torch.testing.assert_close(episode.support_x[:, ::4], raw.support_x)  # each image, then its 3 views
    assert not torch.allclose(episode.support_x[:, 1::4], raw.support_x)
    assert torch.equal(episode.support_y, raw.support_y.repeat_interleave(4, dim=1))
    logits = torch.randn(2, 6 * 4, 3, dtype=torch.float64)
    pooled = tta.pool(logits)
    torch.testing.assert_close(pooled[1, 5], logits[1, 20:24].log_softmax(-1).mean(0))


def test_views_that_change_nothing_give_the_plain_evaluation():
    """Repeated support images leave ProtoNet's prototypes, and identical views the pooled predictions, as they are:
    the plumbing of labels, shots and pooling is exact."""
    split = random_imageset(10, 8, size=16)
    protonet = model(split)

    def sampler():
        return EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(1))

    plain = evaluate(protonet, sampler(), 10, batch_images=1000)
    same = evaluate(protonet, sampler(), 10, batch_images=1000, views=Views(Unchanged(), 2, 0))
    torch.testing.assert_close(same.per_episode, plain.per_episode)
    assert torch.equal(same.drawn, plain.drawn)


def test_views_do_not_depend_on_the_batching_and_change_predictions():
    split = random_imageset(10, 8, size=16)
    protonet = model(split)

    def run(batch_images, seed=0):
        sampler = EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(1))
        return evaluate(protonet, sampler, 12, batch_images=batch_images, views=views(2, seed))

    one, many = run(80), run(4000)  # one task per forward, all twelve in one
    torch.testing.assert_close(one.per_episode, many.per_episode)
    torch.testing.assert_close(one.per_episode_loss, many.per_episode_loss)
    sampler = EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(1))
    reused = views(2, 0)
    evaluate(protonet, EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(5)), 3, views=reused)
    after_another = evaluate(protonet, sampler, 12, batch_images=4000, views=reused)  # restarts its generator
    torch.testing.assert_close(after_another.per_episode_loss, many.per_episode_loss)
    other_views = run(4000, seed=1)
    assert not torch.equal(other_views.per_episode_loss, many.per_episode_loss)


def test_lake_runs_with_views_count_each_query_once():
    split = random_imageset(20, 3, size=16)
    protonet = model(random_imageset(10, 8, size=16))
    support, query = split.images[::3], split.images[1::3]  # [20, 1, 16, 16] each
    run = LakeRun("run01", support, query, torch.arange(20).flip(0))
    plain = lake_runs_error(protonet, [run], torch.device("cpu"))
    same = lake_runs_error(protonet, [run], torch.device("cpu"), views=Views(Unchanged(), 3, 0))
    assert plain == same
    with_views = lake_runs_error(protonet, [run], torch.device("cpu"), views=views(3))
    assert math.isclose(with_views["test/lake_error"] * 20 / 100, round(with_views["test/lake_error"] * 20 / 100))
    assert with_views["test/lake_error"] == with_views["test/lake_error/run01"]


def test_views_need_settings_that_change_an_image():
    def cfg(tta, **augment):
        return OmegaConf.create({"seed": 0, "eval": {"tta": tta, "seed": 0}, "dataset": {"augment": augment}})

    character = OmegaConf.merge(OmegaConf.structured(AugmentConfig), CHARACTER)
    assert tta_views(cfg(0, **character)) is None
    assert tta_views(cfg(2, **character)).views == 2
    with pytest.raises(UserError, match="eval.tta=2 needs .* settings that change an image"):
        tta_views(cfg(2, **OmegaConf.structured(AugmentConfig)))
