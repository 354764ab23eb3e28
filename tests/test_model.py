"""Encoder: shapes, unit norm, CBAM gates, and checkpoints that rebuild the same encoder."""

from __future__ import annotations

import pytest
import torch

from karyosearch.model.checkpoint import CheckpointError, load_encoder, save_checkpoint
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


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    torch.manual_seed(1)
    model = build_encoder(tiny()).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, train={"split": "paper", "seed": 3})
    loaded = load_encoder(tmp_path / "m.pt")
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    assert loaded.cfg == model.cfg and loaded.fingerprint == ckpt.fingerprint
    assert loaded.train_record == {"split": "paper", "seed": 3}
    assert torch.equal(loaded.unit_proxies(), model.unit_proxies())


def test_fingerprint_differs_between_models(tmp_path):
    torch.manual_seed(1)
    a = save_checkpoint(tmp_path / "a.pt", build_encoder(tiny()))
    b = save_checkpoint(tmp_path / "b.pt", build_encoder(tiny()))
    assert a.fingerprint != b.fingerprint


def test_bad_checkpoint_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_encoder(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a karyosearch checkpoint"):
        load_encoder(junk)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a karyosearch checkpoint"):
        load_encoder(tmp_path / "other.pt")


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        EncoderConfig(arch="vit")


def test_exported_half_checkpoint_is_smaller_and_a_model_of_its_own(tmp_path):
    torch.manual_seed(2)
    model = build_encoder(tiny()).eval()
    full = save_checkpoint(tmp_path / "m.pt", model, train={"seed": 0})
    from karyosearch.model.checkpoint import export_checkpoint

    half = export_checkpoint(tmp_path / "m.pt", tmp_path / "h.pt")
    assert (tmp_path / "h.pt").stat().st_size < 0.6 * (tmp_path / "m.pt").stat().st_size
    assert half.fingerprint != full.fingerprint
    loaded = load_encoder(tmp_path / "h.pt")
    assert loaded.fingerprint == half.fingerprint and loaded.train_record == {"seed": 0}
    from karyosearch.model.encoder import weights_fingerprint

    assert weights_fingerprint(loaded) == half.fingerprint  # what loading gives is what was named
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-2)


@pytest.mark.parametrize("forced, expected", [("0", None), ("1", torch.bfloat16)])
def test_cpu_autocast_follows_the_bf16_override(monkeypatch, forced, expected):
    from karyosearch.util.runtime import autocast_dtype, cpu_has_fast_bf16

    monkeypatch.setenv("KARYOSEARCH_CPU_BF16", forced)
    assert cpu_has_fast_bf16() is (forced == "1")
    assert autocast_dtype(torch.device("cpu")) is expected


def test_bf16_autocast_keeps_embeddings_and_proxy_scores_float32_and_close(monkeypatch):
    from karyosearch.util.runtime import autocast

    monkeypatch.setenv("KARYOSEARCH_CPU_BF16", "1")
    torch.manual_seed(2)
    model = build_encoder(tiny()).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        emb32, scores32 = model.embed_and_score(x)
        with autocast(torch.device("cpu")):
            emb16, scores16 = model.embed_and_score(x)
    assert emb16.dtype == torch.float32 and scores16.dtype == torch.float32
    assert torch.allclose(emb16.norm(dim=1), torch.ones(3), atol=1e-4)
    # the scores are the float32 cosines of the (bf16-computed) embeddings to the proxies
    assert torch.allclose(scores16, emb16 @ model.unit_proxies().t(), atol=1e-6)
    assert float((emb16 * emb32).sum(1).min()) > 0.95
