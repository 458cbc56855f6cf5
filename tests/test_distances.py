"""Distances, class means and ProtoNet's logits against per-pair loops and hand-made cases (float64; embeddings,
no image layout)."""

import pytest
import torch

from fewshot_exp.algorithms.base import class_means
from fewshot_exp.algorithms.protonet import ProtoNet
from fewshot_exp.data.episodes import Episode
from fewshot_exp.distances import Distance


def reference(name, q, p):
    """Per-pair loops with torch's own primitives, independent of the batched implementation."""
    out = torch.empty(q.shape[0], q.shape[1], p.shape[1], dtype=q.dtype)
    for t in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(p.shape[1]):
                a, b = q[t, i], p[t, j]
                if name == "l2":
                    out[t, i, j] = -(torch.dist(a, b) ** 2)
                elif name == "cosine":
                    out[t, i, j] = torch.nn.functional.cosine_similarity(a, b, dim=0)
                else:
                    out[t, i, j] = torch.dot(a, b)
    return out


@pytest.mark.parametrize("name", ["l2", "cosine", "dot"])
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_distance_matches_pairwise_reference(name, temperature):
    g = torch.Generator().manual_seed(0)
    q, p = (
        torch.randn(3, 7, 16, generator=g, dtype=torch.float64),
        torch.randn(3, 5, 16, generator=g, dtype=torch.float64),
    )
    got = Distance(name, temperature).double()(q, p)
    torch.testing.assert_close(got, reference(name, q, p) / temperature)


def test_learned_temperature_gets_gradient():
    d = Distance("cosine", 0.1, learn_temperature=True)
    d(torch.randn(1, 4, 8), torch.randn(1, 3, 8)).sum().backward()
    assert d.log_temperature.grad is not None and d.log_temperature.grad != 0


def test_class_means_are_means():
    z = torch.arange(12.0, dtype=torch.float64).view(1, 6, 2)
    y = torch.tensor([[1, 0, 1, 0, 2, 2]])
    expected = torch.tensor([[[4.0, 5.0], [2.0, 3.0], [9.0, 10.0]]], dtype=torch.float64)  # rows 1,3 / 0,2 / 4,5
    torch.testing.assert_close(class_means(z, y, 3), expected)


def test_protonet_logits_on_hand_made_case():
    """Identity encoder on 2-d points: prototypes (0,0) and (4,0); query (1,0) is 1 and 9 away."""
    support = torch.tensor([[[-1.0, 0.0], [1.0, 0.0], [4.0, 1.0], [4.0, -1.0]]], dtype=torch.float64)
    query = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]], dtype=torch.float64)
    ep = Episode(
        support.view(1, 4, 2, 1, 1),
        torch.tensor([[0, 0, 1, 1]]),
        query.view(1, 2, 2, 1, 1),
        torch.tensor([[0, 1]]),
        n_way=2,
    )
    model = ProtoNet(torch.nn.Flatten(), Distance("l2")).double()
    logits = model(ep)
    torch.testing.assert_close(logits, torch.tensor([[[-1.0, -9.0], [-9.0, -1.0]]], dtype=torch.float64))
    loss = model.loss(logits, ep)
    torch.testing.assert_close(loss, -torch.log_softmax(torch.tensor([-1.0, -9.0], dtype=torch.float64), 0)[0])
