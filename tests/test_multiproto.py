"""The multi-prototype classifier (fewshot_exp/algorithms/multiproto.py): prototype init from the support set,
the fitted model, the penalty's effect on the prototype-to-class weights, the mapping report, and ProtoNet at 0
steps (float64, NCHW). (The shared contract is checked in test_algorithm_contract.py.)"""

from __future__ import annotations

import pytest
import torch
from conftest import random_imageset
from torch import nn

from fewshot_exp.algorithms.multiproto import MultiProto, by_class, kmeans
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.data.episodes import Episode, EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.errors import UserError


def model(**kwargs) -> MultiProto:
    torch.manual_seed(0)
    return MultiProto(Conv4(1, hidden=8, out_channels=8, channels_last=False), Distance("l2"), **kwargs).double()


def episode(tasks=2, n=3, k=4, q=2, seed=0) -> Episode:
    split = random_imageset(6, 8, size=16)
    ep = EpisodeSampler(split, n, k, q, tasks, torch.Generator().manual_seed(seed)).sample()
    return Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y, ep.n_way)


def two_blobs_per_class(n=3, per_blob=3, d=4) -> tuple[torch.Tensor, torch.Tensor]:
    """Support embeddings [1, n*2*per_blob, d]: each class is two tight blobs far apart, classes interleaved."""
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(n, 2, d, generator=g, dtype=torch.float64)
    points = centres.unsqueeze(2) + 0.01 * torch.randn(n, 2, per_blob, d, generator=g, dtype=torch.float64)
    y = torch.arange(n).repeat_interleave(2 * per_blob)
    order = torch.randperm(len(y), generator=g)
    return points.reshape(1, -1, d)[:, order], y[None, order]


def test_kmeans_init_finds_each_class_blobs():
    support, y = two_blobs_per_class()
    prototypes, origin = model(per_class=2).init_prototypes(support, y, 3)
    assert prototypes.shape == (1, 6, 4) and origin.tolist() == [[0, 0, 1, 1, 2, 2]]
    for c in range(3):  # each class's two prototypes are the means of its two blobs
        members = support[0, y[0] == c]
        blobs = torch.cdist(members, members) < 1.0  # [6, 6] same-blob mask
        blob_means = torch.stack([members[row].mean(0) for row in blobs.unique(dim=0)])
        found = prototypes[0, origin[0] == c]
        assert blob_means.shape == (2, 4)
        assert torch.cdist(found, blob_means).min(1).values.max() < 1e-9
        assert torch.cdist(found, found)[0, 1] > 1.0  # two different blobs, not one twice


def test_one_prototype_per_class_is_the_class_mean_and_support_init_keeps_every_point():
    support, y = two_blobs_per_class()
    prototypes, origin = model(per_class=1).init_prototypes(support, y, 3)
    for c in range(3):
        torch.testing.assert_close(prototypes[0, c], support[0, y[0] == c].mean(0))
    prototypes, origin = model(init="support").init_prototypes(support, y, 3)
    assert prototypes.shape == (1, 18, 4)
    for c in range(3):  # the same points, grouped by class
        torch.testing.assert_close(prototypes[0, origin[0] == c], support[0, y[0] == c])


def test_per_class_is_capped_at_k_shot_and_kmeans_centres_are_points_means():
    support, y = two_blobs_per_class(per_blob=1)  # K = 2
    prototypes, origin = model(per_class=5).init_prototypes(support, y, 3)
    assert prototypes.shape == (1, 6, 4)
    points = torch.randn(2, 5, 3, dtype=torch.float64)
    centres = kmeans(points, 5, iters=3)  # as many centres as points: the points themselves
    assert torch.cdist(centres, points).min(-1).values.max() < 1e-9


def test_unbalanced_support_is_a_user_error():
    with pytest.raises(UserError, match="same number of support images"):
        by_class(torch.zeros(1, 5, 2), torch.tensor([[0, 0, 0, 1, 1]]), 2)
    with pytest.raises(UserError, match="same number of support images"):  # balanced over the batch, not per task
        by_class(torch.zeros(2, 4, 2), torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]]), 2)
    grouped = by_class(torch.arange(16.0).view(2, 4, 2), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]), 2)
    assert grouped[0, 0].tolist() == [[2, 3], [4, 5]] and grouped[1, 1].tolist() == [[10, 11], [12, 13]]


def test_zero_steps_one_prototype_per_class_predicts_like_protonet():
    ep = episode()
    mp = model(per_class=1, fit_steps=0)
    proto = ProtoNet(mp.encoder, Distance("l2")).double()
    mp.eval()
    with torch.no_grad():
        logits, reference = mp(ep), proto(ep)
        support, query = mp.embed_episode(ep)
        q = mp.matching(query, proto.prototypes(support, ep.support_y, 3))
    torch.testing.assert_close(q, torch.softmax(reference / 2, -1))  # q_j = softmax(-||x - c_j||^2 / 2)
    torch.testing.assert_close(logits, mp.log_scale.exp() * q)  # W = scale * I
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))


def fit_weights(penalty: str, alpha: float) -> torch.Tensor:
    """W after fitting to a support set whose classes overlap (random labels on random points)."""
    mp = model(per_class=2, fit_steps=20, weight_lr=1.0, fit_lr=0.0, penalty=penalty, alpha=alpha, scale=1.0)
    g = torch.Generator().manual_seed(1)
    support = torch.randn(1, 12, 3, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(4)[None]
    prototypes, origin = mp.init_prototypes(support, y, 3)
    return mp.fit(prototypes, mp.init_weights(origin, 3, support.dtype), support, y)[1]


def test_l1_penalty_makes_the_class_weights_sparse_and_l2_shrinks_them():
    free, l1 = fit_weights("l1", 0.0), fit_weights("l1", 0.05)
    assert (free == 0).float().mean() < 0.1  # the fit spreads weight over other classes
    assert (l1 == 0).float().mean() > (free == 0).float().mean() + 0.3  # soft-thresholding zeroes them
    assert fit_weights("l2", 1.0).norm() < 0.9 * fit_weights("l2", 0.0).norm()


def test_fitting_lowers_the_support_loss():
    ep = episode(tasks=1)
    mp = model(fit_steps=5, alpha=0.0)
    with torch.no_grad():
        support, _ = mp.embed_episode(ep)
        p0, origin = mp.init_prototypes(support, ep.support_y, 3)
        w0 = mp.init_weights(origin, 3, support.dtype)
        p1, w1 = mp.fit(p0, w0, support, ep.support_y)
        assert mp.support_objective(p1, w1, support, ep.support_y) < mp.support_objective(p0, w0, support, ep.support_y)


def test_second_order_and_first_order_gradients_differ_and_both_reach_the_encoder():
    ep = episode(tasks=1)
    grads = {}
    for first_order in (False, True):
        mp = model(first_order=first_order, fit_lr=1.0)
        mp.loss(mp(ep), ep).backward()
        grads[first_order] = torch.cat([p.grad.flatten() for p in mp.encoder.parameters()])
        assert grads[first_order].abs().sum() > 0
    assert not torch.allclose(grads[False], grads[True])


def test_explain_and_mapping_report():
    ep = episode(tasks=2)
    mp = model(per_class=2, fit_steps=0, scale=20.0)  # W = 20 * one-hot: each prototype is its own class
    e = mp.explain(ep)
    assert e["prototypes"].shape == (2, 6, 8) and e["prototype_mass"].shape == (2, 6, 3)
    torch.testing.assert_close(e["prototype_mass"].sum(-1), torch.ones(2, 6, dtype=torch.float64))
    assert torch.equal(e["prototype_labels"], e["prototype_origin"]) and not e["prototype_ambiguous"].any()
    report = mp.mapping_report([ep, episode(tasks=1, seed=1)])
    assert report["episodes"] == 3 and report["prototypes"] == 18 and report["classes"] == 9
    assert report["ambiguous"] == report["switched"] == report["classes_without_prototype"] == 0
    assert [p["class"] for p in report["first_episode"]] == [0, 0, 1, 1, 2, 2]

    blurred = model(per_class=2, fit_steps=0, scale=0.1)  # W near 0: every prototype carries all classes
    report = blurred.mapping_report([ep])
    assert report["ambiguous"] == 12 and report["classes_without_prototype"] == 6
    assert all(p["ambiguous"] for p in report["first_episode"])


def test_a_prototype_can_change_class():
    """A class-0 prototype sitting among class-1 points is given to class 1 by the fit of W."""
    mp = model(fit_steps=20, fit_lr=0.0, weight_lr=2.0, alpha=0.0, scale=1.0)
    support = torch.tensor([[[0.0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]]], dtype=torch.float64)
    y = torch.tensor([[0, 0, 0, 1, 1, 1]])
    prototypes = torch.tensor([[[0.05, 0.05], [5.1, 5.1], [4.9, 4.9]]], dtype=torch.float64)
    origin = torch.tensor([[0, 0, 1]])  # the second one starts in class 0, among class-1 points
    weights = mp.fit(prototypes, mp.init_weights(origin, 2, support.dtype), support, y)[1]
    assert weights.argmax(1)[0].tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_class": 0}, "algorithm.per_class must be positive, got 0"),
        ({"fit_steps": -1}, "algorithm.fit_steps must be >= 0, got -1"),
        ({"alpha": -0.1}, "algorithm.alpha must be >= 0, got -0.1"),
        ({"ambiguity": 2.0}, r"algorithm.ambiguity must be in \[0, 1\], got 2.0"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        MultiProto(nn.Identity(), Distance("l2"), **kwargs)
