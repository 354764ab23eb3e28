"""Encoder: shapes, unit norm, CBAM gates, and checkpoints that rebuild the same encoder."""

from __future__ import annotations

import pytest
import torch

from karyosearch.model.encoder import (
    ARCHS,
    CBAM,
    ChannelGate,
    EncoderConfig,
    SpatialGate,
    build_encoder,
)


def tiny(arch: str = "proxy-resnext-cbam") -> EncoderConfig:
    return EncoderConfig(arch=arch, image_size=32, stem="standard")


def test_cbam_gates_keep_shape_and_lie_in_open_unit_interval():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 5, 7) * 10
    channel, spatial = ChannelGate(64, 16), SpatialGate()
    cg, sg = channel(x), spatial(x)
    assert cg.shape == (2, 64, 1, 1) and sg.shape == (2, 1, 5, 7)
    assert bool(((cg > 0) & (cg < 1)).all()) and bool(((sg > 0) & (sg < 1)).all())
    assert CBAM(64)(x).shape == x.shape


@pytest.mark.parametrize("arch", ARCHS)
def test_embeddings_are_2048d_unit_vectors(arch):
    torch.manual_seed(0)
    model = build_encoder(tiny(arch)).eval()
    with torch.no_grad():
        emb, scores = model.embed_and_score(torch.rand(3, 1, 32, 32))
        fmap = model.forward_features(torch.rand(3, 1, 32, 32))
    assert emb.shape == (3, 2048) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4)
    assert scores.shape == (3, 24)
    assert fmap.shape[:2] == (3, 2048)
    if arch != "resnext":  # nearest-proxy scores are cosines
        assert bool((scores.abs() <= 1 + 1e-5).all())


def test_cbam_network_has_attention_and_others_do_not():
    assert build_encoder(tiny("proxy-resnext-cbam")).cbam is not None
    assert build_encoder(tiny("proxy-resnext")).cbam is None


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        EncoderConfig(arch="vit")
