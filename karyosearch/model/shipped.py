"""The encoders shipped in `models/`, one per stain, and the choice between them.

A command that is not given `--model` uses the shipped encoder for its images' stain and says
which: Q-banded crops are bright on dark, G-banded ones dark on light, told apart by the
image pipeline from the background (`data.image.detect_polarity`). The folder is `models/`
beside the package (a source checkout), or `KARYOSEARCH_MODELS`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.image import ImageError, detect_polarity, read_grey
from ..errors import UserError

# stain -> file in the models folder (model cards: models/README.md)
SHIPPED = {
    "Q-band": "bioimlab-proxy-resnext-cbam-128px.pt",
    "G-band": "gband612-proxy-resnext-cbam-96px.pt",
}
SAMPLE = 24  # images looked at to tell the stain (spread over the list)


def models_dir() -> Path:
    """Where the shipped encoders are: $KARYOSEARCH_MODELS, else models/ beside the package."""
    override = os.environ.get("KARYOSEARCH_MODELS")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "models"


def stain_of(grey_image) -> str:  # noqa: ANN001  (a uint8 array as `read_grey` returns)
    """`G-band` for a dark chromosome on a light background, else `Q-band`."""
    return "G-band" if detect_polarity(grey_image) == "dark" else "Q-band"


@dataclass
class ShippedChoice:
    """The shipped encoder picked for a set of images, and why."""

    path: Path
    stain: str
    agreeing: int  # sampled images of that stain
    sampled: int  # sampled images that could be read

    @property
    def note(self) -> str:
        return (
            f"no --model given: {self.agreeing} of {self.sampled} sampled images look "
            f"{self.stain}; using the shipped {self.stain} encoder {self.path}"
        )


def choose_shipped(paths: Sequence[str | os.PathLike]) -> ShippedChoice:
    """The shipped encoder for the stain most of `paths` show (a spread sample of SAMPLE)."""
    if not paths:
        raise UserError("no images to choose an encoder for; pass --model")
    step = max(1, len(paths) // SAMPLE)
    stains: Counter[str] = Counter()
    for path in list(paths)[::step][:SAMPLE]:
        try:
            stains[stain_of(read_grey(path))] += 1
        except ImageError:
            continue
    if not stains:
        raise UserError("none of the sampled images could be read to tell their stain")
    stain, agreeing = stains.most_common(1)[0]
    path = models_dir() / SHIPPED[stain]
    if not path.is_file():
        raise UserError(f"the shipped {stain} encoder {path} is not there; pass --model")
    return ShippedChoice(path, stain, agreeing, sum(stains.values()))
