"""The torchvision-free ResNeXt-50 is torchvision's: same names and shapes, same weights under a
seed, same outputs."""

from __future__ import annotations

import pytest
import torch

from karyosearch.model.encoder import Encoder, EncoderConfig
from karyosearch.model.resnext import resnext50_32x4d

torchvision = pytest.importorskip("torchvision")


def _torchvision_backbone(stem_in: int = 1) -> torch.nn.Sequential:
    """What encoder._backbone built before (torchvision's network, the small stem)."""
    net = torchvision.models.resnext50_32x4d(weights=None)
    conv1 = torch.nn.Conv2d(stem_in, 64, kernel_size=3, stride=1, padding=1, bias=False)
    torch.nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    parts = (net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return torch.nn.Sequential(conv1, *parts)


def test_same_weights_under_a_seed_and_same_outputs():
    torch.manual_seed(3)
    reference = _torchvision_backbone().eval()
    torch.manual_seed(3)
    ours = Encoder(EncoderConfig()).features.eval()
    ref_state, our_state = reference.state_dict(), ours.state_dict()
    assert list(ref_state) == list(our_state)
    for name, tensor in ref_state.items():
        assert torch.equal(tensor, our_state[name]), name
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(reference(x), ours(x))


def test_torchvision_names_and_shapes():
    ours = resnext50_32x4d()
    theirs = torchvision.models.resnext50_32x4d(weights=None)
    expected = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    got = {f"{name}.{k}": v.shape for name, m in ours.items() for k, v in m.state_dict().items()}
    assert got == expected
