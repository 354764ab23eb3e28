"""Normalized softmax loss equals its formula computed by hand."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def test_margin_is_taken_off_the_true_class_cosine_only():
    torch.manual_seed(1)
    x, proxies = torch.randn(6, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    t, m = 0.05, 0.2
    cos = F.normalize(x, dim=1) @ F.normalize(proxies, dim=1).t()
    cos[torch.arange(6), labels] -= m
    expected = F.cross_entropy(cos / t, labels)
    assert torch.allclose(NormalizedSoftmaxLoss(t, margin=m)(x, labels, proxies), expected)
    assert NormalizedSoftmaxLoss(t, margin=m)(x, labels, proxies) > NormalizedSoftmaxLoss(t)(
        x, labels, proxies
    )


def test_margin_keeps_pulling_a_crop_that_is_already_nearest_its_proxy():
    """Right by a cosine lead of 0.3: the plain loss is almost at its floor, the margin's is not,
    and its gradient turns the crop further toward its own proxy."""
    proxies = torch.eye(3)
    x = torch.tensor([[0.9, 0.6, 0.0]], requires_grad=True)  # cos 0.83 own, 0.55 runner-up
    labels = torch.tensor([0])
    plain = NormalizedSoftmaxLoss(0.05)(x, labels, proxies)
    margin = NormalizedSoftmaxLoss(0.05, margin=0.3)(x, labels, proxies)
    assert plain.item() < 0.01 < margin.item()
    margin.backward()
    step = F.normalize(x.detach() - 0.1 * x.grad, dim=1)
    assert float(step[0, 0]) > float(F.normalize(x.detach(), dim=1)[0, 0])
