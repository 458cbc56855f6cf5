"""evaluate(): the confidence interval against the statistics module and batched evaluation against one episode at
a time (float64, NCHW); the tests that compare evaluate() with itself run the default float32 channels_last Conv-4."""

import math
import statistics

import torch
from conftest import random_imageset

from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.data.episodes import EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.evaluate import episodes_fingerprint, evaluate, mean_ci95


def test_ci95_formula():
    values = torch.tensor([0.2, 0.4, 0.9, 0.6, 0.5, 0.8], dtype=torch.float64)
    mean, ci = mean_ci95(values)
    assert math.isclose(mean, statistics.fmean(values.tolist()), rel_tol=1e-12)
    assert math.isclose(ci, 1.96 * statistics.stdev(values.tolist()) / math.sqrt(6), rel_tol=1e-12)


def test_ci95_of_constant_is_zero_and_single_value_is_undefined():
    assert mean_ci95(torch.ones(10)) == (1.0, 0.0)
    assert math.isnan(mean_ci95(torch.tensor([0.5]))[1])


def test_batched_evaluation_equals_one_episode_at_a_time():
    """Many episodes per forward (eval-mode BN) give each episode the accuracy it gets alone (float64 images, from
    the sampler's `normalize`, and an NCHW Conv-4)."""
    split = random_imageset(10, 8, size=16)
    torch.manual_seed(0)
    model = ProtoNet(Conv4(1, 8, 8, channels_last=False), Distance("l2")).double()
    warm_up = EpisodeSampler(split, 5, 2, 3, 4, torch.Generator().manual_seed(9), normalize=torch.Tensor.double)
    model(warm_up.sample())  # move BN stats off init

    def sampler():
        return EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(1), normalize=torch.Tensor.double)

    batched = evaluate(model, sampler(), 12, batch_images=1000)  # 12 tasks in one forward
    one_sampler = sampler()
    episodes = one_sampler.episode(torch.cat([one_sampler.draw(1) for _ in range(12)]))  # drawn one at a time
    model.eval()
    with torch.no_grad():
        per_task = []
        for t in range(12):
            logits = model(
                type(episodes)(
                    episodes.support_x[t : t + 1],
                    episodes.support_y[t : t + 1],
                    episodes.query_x[t : t + 1],
                    episodes.query_y[t : t + 1],
                    5,
                )
            )
            per_task.append((logits.argmax(-1) == episodes.query_y[t : t + 1]).double().mean())
    mean, ci = mean_ci95(torch.stack(per_task))
    assert math.isclose(batched.mean, mean, abs_tol=1e-12) and math.isclose(batched.ci95, ci, abs_tol=1e-12)
    assert batched.episodes == 12
    assert episodes.support_x.dtype == torch.float64
    torch.testing.assert_close(batched.per_episode, torch.stack(per_task))


def test_episodes_do_not_depend_on_the_batching_and_their_fingerprint_names_them():
    """The same episodes, accuracies and fingerprint for any batch_images; the first n of a longer evaluation are
    an evaluation of n; another seed or shape gives another fingerprint."""
    split = random_imageset(10, 8, size=16)
    torch.manual_seed(0)
    model = ProtoNet(Conv4(1, 8, 8), Distance("l2"))

    def run(episodes, batch_images, seed=1, k_shot=2):
        sampler = EpisodeSampler(split, 5, k_shot, 3, 1, torch.Generator().manual_seed(seed))
        acc = evaluate(model, sampler, episodes, batch_images=batch_images)
        return acc, episodes_fingerprint(sampler, acc.drawn)

    (one, one_fp), (many, many_fp) = run(9, 25), run(9, 1000)
    assert torch.equal(one.drawn, many.drawn) and one_fp == many_fp
    torch.testing.assert_close(one.per_episode, many.per_episode)
    assert one.per_episode.shape == one.per_episode_loss.shape == (9,)
    assert math.isclose(one.mean, float(one.per_episode.mean()), rel_tol=1e-12)
    assert torch.equal(run(4, 1000)[0].drawn, one.drawn[:4])
    assert run(9, 25, seed=2)[1] != one_fp and run(9, 25, k_shot=3)[1] != one_fp and len(one_fp) == 16


def test_evaluate_splits_into_forwards_that_fit_the_image_budget():
    split = random_imageset(10, 8, size=16)
    calls = []
    model = ProtoNet(Conv4(1, 8, 8), Distance("l2"))
    original = model.forward
    model.forward = lambda ep: calls.append(ep.tasks) or original(ep)
    evaluate(model, EpisodeSampler(split, 5, 2, 3, 1, torch.Generator().manual_seed(1)), 23, batch_images=100)
    assert calls == [4, 4, 4, 4, 4, 3]  # 25 images per task -> 4 tasks per forward
    assert model.training  # restored
