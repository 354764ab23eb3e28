"""Normalized softmax loss equals its formula computed by hand."""

from __future__ import annotations

import math

import torch

from karyosearch.train.losses import NormalizedSoftmaxLoss


def test_normalized_softmax_matches_hand_computation():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # unit: (0.6, 0.8), (1, 0)
    proxies = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, -1.0]])  # unit: e1, e2, -(1,1)/sqrt2
    labels = torch.tensor([1, 0])
    t = 0.1
    expected = 0.0
    for xi, y in (((0.6, 0.8), 1), ((1.0, 0.0), 0)):
        cos = [xi[0], xi[1], -(xi[0] + xi[1]) / math.sqrt(2)]
        logits = [c / t for c in cos]
        expected += -(logits[y] - math.log(sum(math.exp(v) for v in logits)))
    expected /= 2
    loss = NormalizedSoftmaxLoss(temperature=t)(x, labels, proxies)
    assert abs(float(loss) - expected) < 1e-5


def test_loss_is_invariant_to_vector_scale_and_lower_for_the_right_proxy():
    torch.manual_seed(0)
    x, proxies = torch.randn(5, 8), torch.randn(3, 8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss = NormalizedSoftmaxLoss(0.05)
    assert torch.allclose(loss(x, labels, proxies), loss(7 * x, labels, 0.2 * proxies), atol=1e-5)
    right = loss(proxies[labels] + 0.01 * x, labels, proxies)
    wrong = loss(proxies[(labels + 1) % 3], labels, proxies)
    assert right < 0.1 < wrong
