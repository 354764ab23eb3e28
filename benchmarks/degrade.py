"""The ways another lab's crops differ from ours, applied to a raw image before the pipeline.

Each degradation takes the grey uint8 image as read from its file (`image.read_grey`: before
polarity, cropping or resizing) and returns another. Used by `bench_robustness.py` and
`bench_archive_call.py`; the names are the keys of their JSON.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


def scale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Scanned at `factor` times our resolution (area-averaged, as a coarser sensor)."""

    def apply(grey: np.ndarray) -> np.ndarray:
        h, w = grey.shape
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX))

    return apply


def gamma(g: float) -> Callable[[np.ndarray], np.ndarray]:
    """Another contrast curve: 255 * (v / 255) ** g."""
    table = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** g), 0, 255).astype(np.uint8)
    return lambda grey: table[grey]


def blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """Out of focus: a Gaussian blur of `sigma` px."""
    return lambda grey: np.clip(
        np.round(gaussian_filter(grey.astype(np.float32), sigma)), 0, 255
    ).astype(np.uint8)


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    """Saved as JPEG at `quality`, then read back."""

    def apply(grey: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(grey).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return np.asarray(Image.open(buf).convert("L"))

    return apply


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clean": lambda grey: grey,
    "scale 0.5": scale(0.5),
    "scale 0.75": scale(0.75),
    "gamma 0.7": gamma(0.7),
    "gamma 1.4": gamma(1.4),
    "blur sigma 1": blur(1.0),
    "jpeg 50": jpeg(50),
}
