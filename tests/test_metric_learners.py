"""Matching Networks (+FCE), data hallucination, Relation Network and Siamese network against hand computations
(float64, NCHW)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_imageset
from torch import nn

import fewshot_exp.algorithms.relation as relation_module
from fewshot_exp.algorithms.hallucination import Hallucination
from fewshot_exp.algorithms.matching import MatchingNetwork
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.algorithms.relation import RelationNetwork
from fewshot_exp.algorithms.siamese import SiameseNetwork
from fewshot_exp.data.episodes import Episode, EpisodeSampler
from fewshot_exp.distances import Distance
from fewshot_exp.encoders.conv4 import Conv4
from fewshot_exp.errors import UserError


def vector_episode(support: torch.Tensor, support_y: list, query: torch.Tensor, query_y: list, n_way: int) -> Episode:
    """An episode whose "images" [T, M, 1, 1, D] flatten to the given vectors (use with an nn.Flatten encoder)."""
    return Episode(
        support[:, :, None, None],
        torch.tensor([support_y]).expand(support.shape[0], -1),
        query[:, :, None, None],
        torch.tensor([query_y]).expand(query.shape[0], -1),
        n_way,
    )


def image_episode(tasks=3, n=4, k=2, q=3, size=16, seed=0) -> Episode:
    split = random_imageset(10, 8, size=size, seed=seed)
    ep = EpisodeSampler(split, n, k, q, tasks, torch.Generator().manual_seed(seed)).sample()
    return Episode(ep.support_x.double(), ep.support_y, ep.query_x.double(), ep.query_y, ep.n_way)


def task(ep: Episode, t: int) -> Episode:
    return Episode(
        ep.support_x[t : t + 1], ep.support_y[t : t + 1], ep.query_x[t : t + 1], ep.query_y[t : t + 1], ep.n_way
    )


def permute_support(ep: Episode, perm: torch.Tensor) -> Episode:
    return Episode(ep.support_x[:, perm], ep.support_y[:, perm], ep.query_x, ep.query_y, ep.n_way)


def double_distance(name: str, temperature: float = 1.0) -> Distance:
    """A Distance whose temperature is exact in float64 (its constructor stores log t in float32)."""
    distance = Distance(name).double()
    distance.log_temperature.fill_(math.log(temperature))
    return distance


def small_conv4() -> Conv4:
    torch.manual_seed(0)
    return Conv4(1, hidden=8, out_channels=8, channels_last=False).double()


# --------------------------------------------------------------------------------------------- Matching Networks


def test_matching_attention_equals_hand_computation():
    support = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]], dtype=torch.double)  # labels 0, 1, 0
    query = torch.tensor([[[3.0, 1.0], [-1.0, 2.0]]], dtype=torch.double)
    ep = vector_episode(support, [0, 1, 0], query, [0, 1], n_way=2)
    model = MatchingNetwork(nn.Flatten(), Distance("l2")).double()
    p = model(ep).exp()[0]  # [Q, N]
    for j, x in enumerate(query[0].tolist()):
        cos = [(x[0] * s[0] + x[1] * s[1]) / math.hypot(*x) / math.hypot(*s) for s in support[0].tolist()]
        a = [math.exp(c) / sum(math.exp(c2) for c2 in cos) for c in cos]  # attention over the support set
        assert p[j].tolist() == pytest.approx([a[0] + a[2], a[1]], abs=1e-12)
    # similarity=distance: the distance group's logits, here -||q - s||^2 / 2
    model = MatchingNetwork(nn.Flatten(), double_distance("l2", 2.0), similarity="distance").double()
    p = model(ep).exp()[0]
    x = query[0, 0].tolist()
    logit = [-((x[0] - s[0]) ** 2 + (x[1] - s[1]) ** 2) / 2 for s in support[0].tolist()]
    a = [math.exp(v) / sum(math.exp(v2) for v2 in logit) for v in logit]
    assert p[0].tolist() == pytest.approx([a[0] + a[2], a[1]], abs=1e-12)


def test_matching_loss_is_nll_of_attention_distribution():
    torch.manual_seed(0)
    ep = vector_episode(torch.randn(2, 6, 5).double(), [0, 1, 2, 0, 1, 2], torch.randn(2, 3, 5).double(), [2, 0, 1], 3)
    model = MatchingNetwork(nn.Flatten(), Distance("l2")).double()
    logits = model(ep)
    p = logits.exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, dtype=torch.double))
    nll = -p.gather(2, ep.query_y.unsqueeze(-1)).log().mean()
    torch.testing.assert_close(model.loss(logits, ep), nll)


def fce_model(seed=0, layers=1, steps=3) -> MatchingNetwork:
    torch.manual_seed(seed)
    return MatchingNetwork(nn.Flatten(), Distance("l2"), fce=True, fce_steps=steps, fce_layers=layers).double()


def random_vector_episode(tasks=3, n=3, k=2, q=2, d=6, seed=0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(tasks, n * k, d, generator=g, dtype=torch.double)
    query = torch.randn(tasks, n * q, d, generator=g, dtype=torch.double)
    return vector_episode(
        support, [c for c in range(n) for _ in range(k)], query, [c for c in range(n) for _ in range(q)], n
    )


def test_fce_shapes_and_differs_from_plain():
    ep = random_vector_episode()
    plain = MatchingNetwork(nn.Flatten(), Distance("l2")).double()(ep)
    model = fce_model(layers=2)
    fce = model(ep)
    assert fce.shape == plain.shape == (3, 6, 3)
    torch.testing.assert_close(fce.exp().sum(-1), torch.ones(3, 6, dtype=torch.double))
    assert (fce - plain).abs().max() > 1e-3
    # the LSTMs are as wide as the embedding (the skip connections need it); the attention LSTM reads [f'(x), r]
    assert model.fce.weight_ih_l1.shape == (24, 12) and model.fce.attention_weight_ih.shape == (24, 12)


def test_fce_tasks_are_independent():
    ep = random_vector_episode(tasks=3)
    model = fce_model()
    batched = model(ep)  # no BN in this encoder: independence holds in train mode too
    for t in range(3):
        torch.testing.assert_close(model(task(ep, t))[0], batched[t], rtol=1e-12, atol=1e-12)


def test_fce_bilstm_matches_torch_lstm():
    model = fce_model(layers=2)
    ep = random_vector_episode()
    model(ep)  # materialise
    d = 6
    lstm = nn.LSTM(d, d, num_layers=2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            mine = name.replace("bias_ih", "bias")
            p.copy_(torch.zeros_like(p) if name.startswith("bias_hh") else getattr(model.fce, mine))
    support = ep.support_x.flatten(2)
    out, _ = lstm(support)
    torch.testing.assert_close(model.fce.embed_support(support), out[..., :d] + out[..., d:] + support)


def test_fce_attention_lstm_matches_torch_cell_and_ignores_support_order():
    model = fce_model(steps=4)
    ep = random_vector_episode()
    model(ep)
    f = model.fce
    cell = nn.LSTMCell(12, 6).double()
    with torch.no_grad():
        cell.weight_ih.copy_(f.attention_weight_ih)
        cell.weight_hh.copy_(f.attention_weight_hh)
        cell.bias_ih.copy_(f.attention_bias)
        cell.bias_hh.zero_()
    g, x = torch.randn(2, 5, 6, dtype=torch.double), torch.randn(2, 3, 6, dtype=torch.double)
    h, c = x.flatten(0, 1), torch.zeros(6, 6, dtype=torch.double)
    for _ in range(4):
        r = ((h.view(2, 3, 6) @ g.transpose(1, 2)).softmax(-1) @ g).flatten(0, 1)
        h_hat, c = cell(torch.cat([x.flatten(0, 1), r], -1), (h, c))
        h = h_hat + x.flatten(0, 1)
    torch.testing.assert_close(f.embed_query(x, g), h.view(2, 3, 6))
    perm = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(f.embed_query(x, g[:, perm]), f.embed_query(x, g))


def test_support_order_matters_only_through_the_bilstm():
    ep = random_vector_episode(k=3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    plain = MatchingNetwork(nn.Flatten(), Distance("l2")).double()
    torch.testing.assert_close(plain(permute_support(ep, perm)), plain(ep))
    model = fce_model()
    assert (model(permute_support(ep, perm)) - model(ep)).abs().max() > 1e-4


# --------------------------------------------------------------------------------------------- Hallucination


def test_hallucination_m0_equals_protonet_exactly():
    encoder, distance = small_conv4(), Distance("l2")
    hallucination, protonet = Hallucination(encoder, distance, n_hallucinated=0).double(), ProtoNet(encoder, distance)
    ep = image_episode()
    for train in (True, False):
        hallucination.train(train), protonet.train(train)
        torch.manual_seed(0)
        a = hallucination(ep)
        torch.manual_seed(1)
        assert torch.equal(a, protonet(ep))
    assert not hallucination.generator.has_uninitialized_params()  # checkpoints hold plain tensors


def test_hallucination_adds_n_times_m_points_that_change_prototypes():
    n, k, m = 4, 2, 5
    model = Hallucination(small_conv4(), Distance("l2"), n_hallucinated=m).double()
    ep = image_episode(n=n, k=k)
    support, _ = model.embed_episode(ep)
    torch.manual_seed(0)
    augmented, labels = model.augment(support, ep.support_y, n)
    assert augmented.shape == (3, n * k + n * m, support.shape[-1])
    assert torch.equal(augmented[:, : n * k], support)
    assert torch.equal(labels[:, n * k :].sort(1).values, torch.arange(n).repeat_interleave(m).expand(3, -1))
    real = model.prototypes(support, ep.support_y, n)
    augmented_prototypes = model.prototypes(augmented, labels, n)
    assert ((augmented_prototypes - real).norm(dim=-1) > 1e-6).all()  # every class's prototype moves
    # each slot is seeded from a support image of its own class
    torch.manual_seed(0)
    seeds, classes, noise = model.draw(ep.support_y, n, support.shape[-1])
    assert torch.equal(ep.support_y.gather(1, seeds), classes)
    assert noise.shape == (3, n * m, support.shape[-1])


def test_hallucination_generator_and_encoder_get_gradient_and_seeded_noise_is_reproducible():
    model = Hallucination(small_conv4(), Distance("l2"), n_hallucinated=3, noise_dim=4, hidden=16).double()
    ep = image_episode()
    torch.manual_seed(0)
    model.loss(model(ep), ep).backward()
    for name, p in model.generator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.generator.weight1.shape == (16, 8 + 4)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(ep)
        torch.manual_seed(5)
        b = model(ep)
        torch.manual_seed(6)
        c = model(ep)
    assert torch.equal(a, b) and not torch.equal(a, c)  # eval hallucinates too, from the seeded RNG


def test_hallucination_rejects_negative_m():
    with pytest.raises(UserError, match="n_hallucinated"):
        Hallucination(small_conv4(), Distance("l2"), n_hallucinated=-1)


# --------------------------------------------------------------------------------------------- Relation Network


def relation_model(class_feature="sum") -> RelationNetwork:
    encoder = small_conv4()
    torch.manual_seed(1)
    return RelationNetwork(encoder, Distance("l2"), class_feature=class_feature, hidden=8, fc_hidden=4).double()


def test_conv4_feature_maps():
    encoder = small_conv4()
    x = torch.rand(2, 1, 28, 28, dtype=torch.double)
    assert encoder.features(x).shape == (2, 8, 1, 1)
    assert encoder.features(x, pooled_blocks=2).shape == (2, 8, 7, 7)
    torch.testing.assert_close(encoder(x), encoder.features(x).flatten(1))


@pytest.mark.parametrize("class_feature", ["sum", "mean"])
def test_relation_scores_equal_the_module_on_concatenated_maps(class_feature):
    model = relation_model(class_feature)
    model.eval()
    ep = image_episode(tasks=2, size=28)
    with torch.no_grad():
        scores = model(ep)
        maps = model.feature_maps(torch.cat([ep.support_x, ep.query_x], 1))
        support, query = maps[:, :8], maps[:, 8:]
        for t in range(2):
            for j in range(12):
                for c in range(4):
                    members = support[t, ep.support_y[t] == c]
                    class_map = members.sum(0) if class_feature == "sum" else members.mean(0)
                    pair = torch.cat([class_map, query[t, j]])[None]  # [1, 2C, 7, 7]
                    expected = model.relation_from_first(model.first(pair))[0]
                    torch.testing.assert_close(scores[t, j, c], expected)
    assert maps.shape[-2:] == (7, 7)  # Sung et al.: only the first two blocks pool
    assert ((scores >= 0) & (scores <= 1)).all()


def test_relation_eval_chunks_give_the_same_scores(monkeypatch):
    model = relation_model()
    model.eval()
    ep = image_episode(tasks=3)
    with torch.no_grad():
        whole = model(ep)
        monkeypatch.setattr(relation_module, "EVAL_PAIRS", 1)  # one task per pass
        torch.testing.assert_close(model(ep), whole)


def test_relation_mse_loss_equals_hand_formula():
    model = relation_model()
    ep = image_episode()
    scores = model(ep)
    assert ((scores >= 0) & (scores <= 1)).all()
    by_hand = sum(
        (float(scores[t, j, c].detach()) - float(ep.query_y[t, j] == c)) ** 2
        for t in range(3)
        for j in range(12)
        for c in range(4)
    ) / (3 * 12 * 4)
    assert float(model.loss(scores, ep).detach()) == pytest.approx(by_hand, rel=1e-12)


# --------------------------------------------------------------------------------------------- Siamese network


def siamese_model(**kwargs) -> SiameseNetwork:
    model = SiameseNetwork(nn.Flatten(), kwargs.pop("distance", Distance("l2")), **kwargs).double()
    return model


def tiny_pair_episode() -> Episode:
    support = torch.tensor([[[0.0, 1.0], [2.0, 0.5]]], dtype=torch.double)  # classes 0, 1
    query = torch.tensor([[[0.5, 1.5], [1.0, -1.0]]], dtype=torch.double)  # classes 0, 1
    return vector_episode(support, [0, 1], query, [0, 1], n_way=2)


def set_head(model: SiameseNetwork, ep: Episode) -> tuple[list, float]:
    model(ep)  # materialise the lazy head
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-1.5, 0.7]], dtype=torch.double))
        model.head.bias.fill_(0.3)
    return [-1.5, 0.7], 0.3


def hand_p(a, b, alpha, beta) -> float:
    return 1 / (1 + math.exp(-(sum(w * abs(x - y) for w, x, y in zip(alpha, a, b)) + beta)))


@pytest.mark.parametrize("pairs", ["all", "support_query"])
def test_siamese_bce_pair_loss_equals_hand_computation(pairs):
    ep = tiny_pair_episode()
    model = siamese_model(pairs=pairs)
    alpha, beta = set_head(model, ep)
    images = [*ep.support_x[0].flatten(1).tolist(), *ep.query_x[0].flatten(1).tolist()]
    labels = [0, 1, 0, 1]
    if pairs == "all":
        index = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    else:
        index = [(i, j) for i in (2, 3) for j in (0, 1)]  # query x support
    pos = [-math.log(hand_p(images[i], images[j], alpha, beta)) for i, j in index if labels[i] == labels[j]]
    neg = [-math.log(1 - hand_p(images[i], images[j], alpha, beta)) for i, j in index if labels[i] != labels[j]]
    expected = 0.5 * sum(pos) / len(pos) + 0.5 * sum(neg) / len(neg)
    assert float(model.loss(model(ep), ep).detach()) == pytest.approx(expected, rel=1e-12)


def test_siamese_contrastive_loss_equals_hand_computation():
    ep = tiny_pair_episode()
    model = siamese_model(loss="contrastive", margin=2.0, distance=double_distance("l2", 0.5))
    images = [*ep.support_x[0].flatten(1).tolist(), *ep.query_x[0].flatten(1).tolist()]
    labels = [0, 1, 0, 1]
    pos, neg = [], []
    for i in range(4):
        for j in range(i + 1, 4):
            d = math.dist(images[i], images[j]) / math.sqrt(0.5)
            (pos if labels[i] == labels[j] else neg).append(d**2 if labels[i] == labels[j] else max(0, 2.0 - d) ** 2)
    expected = 0.5 * sum(pos) / len(pos) + 0.5 * sum(neg) / len(neg)
    assert float(model.loss(model(ep), ep).detach()) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(UserError, match="distance=l2 or distance=cosine"):
        siamese_model(loss="contrastive", distance=Distance("dot"))


@pytest.mark.parametrize("loss", ["bce", "contrastive"])
def test_siamese_classifies_by_most_similar_support_image(loss):
    torch.manual_seed(0)
    support, query = torch.randn(2, 12, 5).double(), torch.randn(2, 7, 5).double()
    ep = vector_episode(support, [c for c in range(4) for _ in range(3)], query, [0] * 7, n_way=4)
    model = siamese_model(loss=loss)
    logits = model(ep)
    scores = logits.exp()
    assert ((scores >= 0) & (scores <= 1)).all()
    for t in range(2):
        for j in range(7):
            x = query[t, j].tolist()
            if loss == "bce":
                alpha, beta = model.head.weight[0].tolist(), float(model.head.bias.detach())
                p = [hand_p(x, s, alpha, beta) for s in support[t].tolist()]
            else:
                p = [math.exp(-(math.dist(x, s) ** 2)) for s in support[t].tolist()]
            best = [max(p[3 * c : 3 * c + 3]) for c in range(4)]
            assert scores[t, j].tolist() == pytest.approx(best, rel=1e-9)
            assert int(logits[t, j].argmax()) == max(range(12), key=p.__getitem__) // 3  # nearest support's class


def test_siamese_loss_recomputes_without_a_matching_forward():
    ep = tiny_pair_episode()
    model = siamese_model()
    set_head(model, ep)
    logits = model(ep)
    cached = model.loss(logits, ep)
    assert model._cache is None
    torch.testing.assert_close(model.loss(logits, ep), cached)  # second call embeds the episode itself
    other = Episode(ep.support_x + 1, ep.support_y, ep.query_x, ep.query_y, ep.n_way)
    model(other)
    assert not torch.equal(model.loss(logits, ep), model.loss(model(other), other))


def test_siamese_pairs_do_not_cross_tasks():
    torch.manual_seed(0)
    ep = random_vector_episode(tasks=2)
    model = siamese_model()
    model(ep)
    both = model.loss(model(ep), ep)
    first, second = (model.loss(model(task(ep, t)), task(ep, t)) for t in range(2))
    # the pooled loss weighs both tasks' pairs; with equal pair counts it is the mean of the per-task losses
    torch.testing.assert_close(both, (first + second) / 2)
