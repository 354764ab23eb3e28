"""The encoder: ResNeXt-50 (32x4d) with learnable class proxies and CBAM attention.

Three networks, selected by name (MIDL 2020, "Deep Metric Learning Network using Proxies for
Chromosome Classification in Karyotyping Test"):

- `resnext`: plain classifier trained with cross-entropy (the paper's baseline); its
  embedding is the L2-normalised average-pooled conv5 feature.
- `proxy-resnext`: global average pool -> LayerNorm -> L2 normalise: a 2048-d unit embedding,
  trained against one learnable proxy per class (normalized softmax loss).
- `proxy-resnext-cbam`: as above with CBAM (Woo et al. 2018) after conv5 and global average
  plus global max pooling; still 2048-d.

As in timm, `forward_features` gives the conv5 feature map and `forward_head` the embedding;
`forward` returns the L2-normalised embedding, so normalisation never falls to callers.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from . import EMBEDDING_DIM
from .config import ARCHS, STEMS, EncoderConfig  # noqa: F401  (re-exported: older imports)
from .resnext import is_meta, resnext50_32x4d


class ChannelGate(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), shape (N, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16, device=None):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False, device=device),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False, device=device),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialGate(nn.Module):
    """CBAM spatial attention: sigmoid(conv7x7([mean_c(x), max_c(x)])), shape (N, 1, H, W)."""

    def __init__(self, kernel_size: int = 7, device=None):
        super().__init__()
        self.conv = nn.Conv2d(
            2, 1, kernel_size, padding=kernel_size // 2, bias=False, device=device
        )
        self.bn = nn.BatchNorm2d(1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel, then spatial."""

    def __init__(self, channels: int, reduction: int = 16, device=None):
        super().__init__()
        self.channel = ChannelGate(channels, reduction, device)
        self.spatial = SpatialGate(device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


def _backbone(cfg: EncoderConfig, device=None) -> nn.Sequential:
    net = resnext50_32x4d(device)  # torchvision's network, built without importing torchvision
    if cfg.stem == "small":
        # At 64 px the standard stem leaves conv5 a 2x2 map; a 3x3 stride-1 first conv keeps
        # four times the spatial detail for four times the compute.
        conv1 = nn.Conv2d(cfg.in_chans, 64, 3, stride=1, padding=1, bias=False, device=device)
    else:
        conv1 = nn.Conv2d(cfg.in_chans, 64, 7, stride=2, padding=3, bias=False, device=device)
    if not is_meta(device):
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    rest = ("bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(conv1, *(net[name] for name in rest))


class Encoder(nn.Module):
    """Chromosome image (N, 1, S, S) in [0, 1] -> unit embedding (N, 2048)."""

    def __init__(self, cfg: EncoderConfig, device: torch.device | str | None = None):
        """`device` "meta" builds the modules without weights (see `from_state_dict`)."""
        super().__init__()
        self.cfg = cfg
        self.features = _backbone(cfg, device)
        self.cbam = (
            CBAM(EMBEDDING_DIM, cfg.cbam_reduction, device)
            if cfg.arch == "proxy-resnext-cbam"
            else None
        )
        if cfg.uses_proxies:
            self.norm = nn.LayerNorm(EMBEDDING_DIM, device=device)
            shape = (cfg.num_classes, EMBEDDING_DIM)
            proxies = (
                torch.empty(shape, device=device)
                if is_meta(device)
                else torch.randn(shape, device=device) * 0.01
            )
            self.proxies = nn.Parameter(proxies)
        else:
            self.classifier = nn.Linear(EMBEDDING_DIM, cfg.num_classes, device=device)
        # Inputs are standardised with fixed constants so checkpoints need no data statistics
        # (on the CPU whatever `device`: they are no weights).
        self.register_buffer("input_mean", torch.tensor(0.25), persistent=False)
        self.register_buffer("input_std", torch.tensor(0.3), persistent=False)

    @classmethod
    def from_state_dict(cls, cfg: EncoderConfig, state: dict[str, torch.Tensor]) -> Encoder:
        """An encoder holding the weights `state` (RuntimeError when they do not fit `cfg`).

        The modules are built on the meta device, so no random initial weights are drawn only
        to be overwritten (a third of a second of every cold `query`), then take `state`'s
        tensors as they are. (Not `with torch.device("meta")`: that imports torch._dynamo,
        2 s.)
        """
        model = cls(cfg, device="meta")
        model.load_state_dict(state, assign=True)
        return model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv5 feature map (N, 2048, h, w), after CBAM where the network has it."""
        x = self.features((x - self.input_mean) / self.input_std)
        return self.cbam(x) if self.cbam is not None else x

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling, plus global max pooling for the CBAM network."""
        pooled = fmap.mean(dim=(2, 3))
        if self.cbam is not None:
            pooled = pooled + fmap.amax(dim=(2, 3))
        return pooled

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """The L2-normalised 2048-d embedding of a feature map (float32)."""
        pooled = self.pool(fmap).float()
        if self.cfg.uses_proxies:
            pooled = self.norm(pooled)
        return F.normalize(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and class scores in one pass.

        Scores are the cosines to the class proxies (nearest-proxy classification) for the
        proxy networks and the classifier's logits for `resnext`; argmax is the prediction.
        """
        fmap = self.forward_features(x)
        embedding = self.forward_head(fmap)
        if self.cfg.uses_proxies:
            return embedding, self.proxy_scores(embedding)
        return embedding, self.classifier(self.pool(fmap).float())

    def unit_proxies(self) -> torch.Tensor:
        """The class proxies, unit-normalised (num_classes, 2048)."""
        return F.normalize(self.proxies.float(), dim=1)

    def proxy_scores(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosine of each embedding to each class proxy (N, num_classes), in float32 even
        under autocast (the karyotype's probabilities divide them by a small temperature)."""
        with torch.autocast(embedding.device.type, enabled=False):
            return embedding.float() @ self.unit_proxies().t()

    @property
    def score_temperature(self) -> float:
        """The T that scores are divided by to give logits: the training temperature for proxy
        cosines, 1 for classifier logits."""
        return self.cfg.temperature if self.cfg.uses_proxies else 1.0


def build_encoder(cfg: EncoderConfig) -> Encoder:
    return Encoder(cfg)


def weights_fingerprint(model: nn.Module) -> str:
    """A short SHA-256 of the weights: identifies the model an index was built with."""
    return state_fingerprint(model.state_dict())


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """`weights_fingerprint` of a state dict: SHA-256 over the sorted names and tensor bytes
    (about 0.1 s for the 64 px ResNeXt). A checkpoint's stored fingerprint is checked against
    it on reading, so flipped bytes in the weights are caught, not trusted."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
