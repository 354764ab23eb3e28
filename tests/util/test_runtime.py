"""The runtime: bf16 autocast where it pays, device choice."""

from __future__ import annotations

import pytest
import torch

from karyosearch.model.encoder import (
    build_encoder,
)

from ..model.test_encoder import tiny


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
