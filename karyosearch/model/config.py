"""The encoder's config: everything needed to rebuild an encoder, stored in every checkpoint
and in every exported ONNX model. torch-free, so a query that runs on ONNX Runtime reads it
without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.image import PREPROCESS_VERSION
from ..labels import CLASS_NAMES

ARCHS: tuple[str, ...] = ("resnext", "proxy-resnext", "proxy-resnext-cbam")


def uses_proxies(arch: str) -> bool:
    """Whether network `arch` classifies by learnable class proxies (else by logits)."""
    return arch != "resnext"


STEMS: tuple[str, ...] = ("standard", "small")  # see EncoderConfig.stem


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder (stored in every checkpoint)."""

    arch: str = "proxy-resnext-cbam"  # one of ARCHS
    image_size: int = 64  # input side S in px; images are prepared to S x S
    canvas: int = 0  # fixed-scale canvas in source px (image.prepare_input); 0: none
    stem: str = "small"  # "standard": 7x7/2 conv + maxpool; "small": 3x3/1 conv + maxpool
    in_chans: int = 1  # 1: the grey crop; 2 with a canvas: also its fixed-scale view
    num_classes: int = len(CLASS_NAMES)  # one proxy (or logit) per class
    temperature: float = 0.05  # normalized-softmax temperature T (Zhai & Wu use 0.05)
    cbam_reduction: int = 16  # CBAM channel-MLP reduction ratio
    preprocess_version: int = PREPROCESS_VERSION  # image.py version the encoder was trained on

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(
                f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}"
            )
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose standard or small")
        if self.in_chans != (2 if self.canvas else 1):
            raise ValueError(f"in_chans {self.in_chans} does not match canvas {self.canvas}")
        if self.image_size < 16:
            raise ValueError(f"image size {self.image_size} is too small (at least 16 px)")

    @property
    def uses_proxies(self) -> bool:
        return uses_proxies(self.arch)
