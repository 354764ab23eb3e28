"""Self-describing checkpoints: the encoder's config, weights, class names, fingerprint and
training record in one file, so that the file alone rebuilds its encoder (`load_encoder`).

The image size is stored once, in the config; older checkpoints that also kept it in their
training record read the same.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.image import PREPROCESS_VERSIONS
from ..errors import UserError
from ..labels import CLASS_NAMES
from ..util.atomic import atomic_path
from ..util.runtime import timestamp
from .encoder import Encoder, EncoderConfig, state_fingerprint, weights_fingerprint

CHECKPOINT_FORMAT = "karyosearch-checkpoint/1"


class CheckpointError(UserError):
    """A file that is not a usable karyosearch checkpoint."""


@dataclass
class Checkpoint:
    """A self-describing checkpoint: it alone rebuilds its encoder."""

    config: EncoderConfig
    state_dict: dict[str, torch.Tensor]
    class_names: tuple[str, ...] = CLASS_NAMES
    fingerprint: str = ""
    train: dict[str, Any] = field(default_factory=dict)  # split, seed, preset, metrics, times
    optimizer: dict[str, Any] | None = None  # optimiser/scheduler/epoch state for --resume

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "class_names": list(self.class_names),
            "fingerprint": self.fingerprint,
            "train": self.train,
            "state_dict": self.state_dict,
            "optimizer": self.optimizer,
            "saved_at": timestamp(),
        }


def save_checkpoint(
    path: str | os.PathLike,
    model: Encoder,
    train: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    half: bool = False,
) -> Checkpoint:
    """Write model, config and training record atomically (temporary file, then rename).

    `half` stores floating-point weights as float16 (half the size); use `export_checkpoint`,
    which rounds the weights first so that the fingerprint matches what loading gives.
    """
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    fingerprint = weights_fingerprint(model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        # the fingerprint of the weights as reading gives them back, so that it verifies
        fingerprint = state_fingerprint(_as_read(state))
    ckpt = Checkpoint(model.cfg, state, CLASS_NAMES, fingerprint, dict(train or {}), optimizer)
    with atomic_path(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return ckpt


def _as_read(state: dict[str, Any]) -> dict[str, Any]:
    """The weights as `read_checkpoint` hands them on: float16 tensors back in float32."""
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file, or raise CheckpointError saying why it is unusable.

    The weights are verified: their fingerprint is recomputed from the tensors read and
    compared with the one stored in the file, so a corrupt file (flipped bytes in the tensor
    data, which the zip container does not check) is refused, never trusted.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a bad file
        raise CheckpointError(
            f"{path}: not a karyosearch checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a karyosearch checkpoint (format {CHECKPOINT_FORMAT})")
    try:
        config = EncoderConfig(**raw["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint config is invalid ({err})") from None
    if config.preprocess_version not in PREPROCESS_VERSIONS:
        raise CheckpointError(
            f"{path}: trained on preprocessing v{config.preprocess_version}, this karyosearch "
            f"prepares images with v{', v'.join(map(str, PREPROCESS_VERSIONS))} only; use the "
            "karyosearch that trained it, or retrain the model"
        )
    try:
        state = _as_read(dict(raw["state_dict"]))
        stored = str(raw.get("fingerprint") or "")
        actual = state_fingerprint(state)
    except Exception as err:  # a mangled state dict: not tensors, unreadable storage
        raise CheckpointError(
            f"{path}: the weights cannot be read ({type(err).__name__}): the file is corrupt"
        ) from None
    if stored and stored != actual:
        raise CheckpointError(
            f"{path}: the weights do not match their fingerprint: the file is corrupt"
        )
    return Checkpoint(
        config,
        state,
        tuple(raw["class_names"]),
        stored or actual,
        raw.get("train") or {},
        raw.get("optimizer"),
    )


def export_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, half: bool = True
) -> Checkpoint:
    """A copy of a checkpoint for distribution: no optimiser state, optionally float16.

    The weights are rounded to float16 before the fingerprint is taken, so the exported model
    is a model of its own: an index built with the float32 original refuses it.
    """
    ckpt = read_checkpoint(src)
    model = Encoder(ckpt.config)
    state = ckpt.state_dict
    if half:
        state = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state)
    return save_checkpoint(dst, model, ckpt.train, half=half)


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Rebuild the encoder from a checkpoint alone, in eval mode, on `device`.

    The checkpoint's fingerprint and training record are on `encoder.fingerprint` and
    `encoder.train_record`.
    """
    ckpt = read_checkpoint(path)
    try:
        model = Encoder.from_state_dict(ckpt.config, ckpt.state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {ckpt.config.arch} ({err})") from None
    model.fingerprint = ckpt.fingerprint  # verified against the weights by read_checkpoint
    model.train_record = ckpt.train
    return model.to(device).eval()


ModelLike = str | os.PathLike | Any  # a checkpoint path or a loaded Encoder


def resolve_encoder(model: ModelLike, device: str | torch.device = "cpu") -> tuple[Encoder, str]:
    """(encoder, absolute checkpoint path or '') from a checkpoint path (loaded on `device`)
    or a loaded Encoder; an Encoder without a fingerprint gets one (`weights_fingerprint`)."""
    if isinstance(model, (str, os.PathLike)):
        return load_encoder(model, device), str(Path(model).expanduser().resolve())
    if not hasattr(model, "fingerprint"):
        model.fingerprint = weights_fingerprint(model)
    return model, ""
