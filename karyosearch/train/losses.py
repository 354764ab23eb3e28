"""Normalized softmax loss against learnable class proxies (Zhai & Wu, BMVC 2019).

    L = -log( exp(x . p_y / T) / sum_z exp(x . p_z / T) )

with the embedding x and every proxy p_z unit-normalised and T a temperature (0.05 in Zhai
& Wu's code). This is cross-entropy over cosine similarities scaled by 1/T. The MIDL 2020
paper trains Proxy-ResNeXt(-CBAM) with it; the proxies live in the encoder (so
nearest-proxy classification works from a checkpoint alone) and are passed in here.

An optional additive margin m (CosFace: Wang et al., CVPR 2018) is taken off the true class's
cosine before the division, x . p_y - m: the loss then stays above its floor until a crop's
cosine to its own proxy leads every other by more than m, so training goes on pulling the
embedding toward its proxy after nearest-proxy classification is already right. m = 0 is the
paper's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormalizedSoftmaxLoss(nn.Module):
    """Cross-entropy of cosine(x, proxies) / T; optional label smoothing and additive margin
    on the true class's cosine (both 0 in the paper)."""

    def __init__(
        self, temperature: float = 0.05, label_smoothing: float = 0.0, margin: float = 0.0
    ):
        super().__init__()
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.margin = margin

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor
    ) -> torch.Tensor:
        cosines = F.normalize(embeddings.float(), dim=1) @ F.normalize(proxies.float(), dim=1).t()
        if self.margin:
            cosines = cosines - self.margin * F.one_hot(labels, cosines.shape[1])
        return F.cross_entropy(
            cosines / self.temperature, labels, label_smoothing=self.label_smoothing
        )
