"""Training: the paper's recipe (`--preset paper`) and a fast from-scratch CPU recipe (`default`).

Images are loaded and prepared once (the same `load`/`prepare` as indexing and querying) and
kept in memory as uint8; augmentation runs on whole batches as one affine warp, so the two
CPU cores spend their time in the network, not in data loading.

The best checkpoint by validation accuracy is kept at `out`; `out` + `.last` holds the latest
epoch with optimiser state for `resume`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import Dataset, read_dataset
from .errors import UserError
from .evaluate import check_unseen
from .image import ImageError, load, prepare_input
from .inference import autocast, autocast_dtype, to_model_input
from .losses import NormalizedSoftmaxLoss
from .machine import cpu_name
from .model import (
    STEMS,
    Checkpoint,
    Encoder,
    EncoderConfig,
    read_checkpoint,
    save_checkpoint,
)
from .sampler import ClassBalancedBatchSampler
from .splits import split_dataset


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, batches and augmentation (one per preset)."""

    image_size: int  # network input side S (px)
    stem: str  # "standard" or "small" (see EncoderConfig)
    epochs: int  # maximum epochs
    optimizer: str  # "adamw" or "sgd"
    lr: float  # peak learning rate
    weight_decay: float  # decoupled (AdamW) or L2 (SGD) weight decay
    schedule: str  # "onecycle" (warm-up then cosine) or "plateau" (ReduceLROnPlateau on val loss)
    m_per_class: int = 4  # images per class in a batch
    classes_per_batch: int = 16  # classes per batch (batch = m * classes)
    proxy_lr_mult: float = 1.0  # proxies learn this much faster than the network
    label_smoothing: float = 0.0  # on the normalized softmax / cross-entropy targets
    rotate: float = 0.0  # max rotation (degrees) of the batch augmentation
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range (<1 shrinks the chromosome)
    translate: float = 0.0  # max shift as a fraction of the image side
    flips: bool = True  # random left-right flips (a mirrored chromosome is still itself)
    vertical_flips: bool = True  # random top-bottom flips (swaps the p and q arms)
    pad_crop: int = 0  # paper: pad by this many px each side, random crop back to S
    intensity: float = 0.0  # max relative gamma / gain jitter
    ema: float = 0.0  # weight EMA decay per step (0 = off); evaluation uses the EMA weights
    canvas_percentile: float = 0.0  # >0: add a fixed-scale view (image.prepare_input) on a
    # canvas this percentile of the training crops' long sides, so length is seen; 0: none
    patience: int = 0  # early stopping after this many epochs without improvement (0 = off)
    plateau_patience: int = 10  # ReduceLROnPlateau patience (paper)


PRESETS: dict[str, Recipe] = {
    # The MIDL 2020 paper: SGD 1e-3, momentum 0.9, wd 1e-4, ReduceLROnPlateau(0.1, 10) on
    # validation loss, pad to 256 / random crop 224 / random flips (at S=224 the padding is
    # 16 px a side).
    "paper": Recipe(
        image_size=224,
        stem="standard",
        epochs=100,
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-4,
        schedule="plateau",
        pad_crop=16,
        flips=True,
        patience=20,
    ),
    # Fast from scratch on a 2-core CPU: 64 px, AdamW with one-cycle, light augmentation (a
    # small rotation, zoom and shift, left-right flips, mild intensity jitter), no label
    # smoothing, and a weight EMA. Measured on BioImLab validation (paper split, seed 0, 14
    # epochs, 30 min on an AVX2 CPU): heavy augmentation (rotation up to 180 degrees,
    # top-bottom flips, label smoothing 0.1) reached 76.3%, this light recipe 90.7% (README,
    # "Training"). 30 epochs fill about 30 minutes on a 2-core CPU with native bf16
    # (AVX-512 BF16, ~85 img/s with augmentation); an AVX2-only CPU takes about twice that.
    "default": Recipe(
        image_size=64,
        stem="standard",
        epochs=30,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        schedule="onecycle",
        proxy_lr_mult=10.0,
        rotate=15.0,
        scale=(0.9, 1.1),
        translate=0.05,
        flips=True,
        vertical_flips=False,
        intensity=0.1,
        ema=0.995,
        patience=0,
    ),
}


@dataclass
class TrainOptions:
    """One training run: what to train on, which network, where to write it."""

    data: str  # dataset folder or manifest
    out: str  # best checkpoint path
    arch: str = "proxy-resnext-cbam"  # one of model.ARCHS
    split: str = "paper"  # "paper" or "cell"
    seed: int = 0  # seeds the split, the initialisation, batches and augmentation
    preset: str = "default"  # key of PRESETS
    epochs: int | None = None  # overrides the preset
    image_size: int | None = None  # overrides the preset
    device: str = "auto"  # "auto", "cpu" or "cuda"
    layout: str = "auto"  # dataset layout (see datasets.read_dataset)
    resume: bool = False  # continue from `out`.last if it exists
    max_minutes: float | None = None  # stop after this wall time (keeps the best so far)
    limit: int | None = None  # use only the first N training images (smoke tests)
    init: str | None = None  # start from this checkpoint's weights instead of at random
    overrides: dict[str, Any] = field(default_factory=dict)  # Recipe fields to change


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def load_all(paths: list[str], progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Load (read, one polarity, crop to content) every image on two threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        crops = []
        for n, crop in enumerate(pool.map(load, paths)):
            crops.append(crop)
            if progress is not None and n % 256 == 255:
                progress(256)
    return crops


def canvas_for(crops: list[np.ndarray], percentile: float) -> int:
    """The fixed-scale canvas side (source px): a percentile of the crops' long sides."""
    if percentile <= 0 or not crops:
        return 0
    return int(math.ceil(np.percentile([max(c.shape) for c in crops], percentile)))


def prepare_all(crops: list[np.ndarray], size: int, canvas: int = 0) -> np.ndarray:
    """Prepare loaded crops into one uint8 array, (N, S, S) or (N, 2, S, S) with a canvas
    (quantised to save memory)."""
    shape = (2, size, size) if canvas else (size, size)
    out = np.zeros((len(crops), *shape), np.uint8)
    for i, crop in enumerate(crops):
        out[i] = np.round(prepare_input(crop, size, canvas) * 255.0)
    return out


def augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, zoom, shift, flips and intensity jitter for a batch (N, 1, S, S)."""
    n, _, size, _ = x.shape
    if recipe.pad_crop:
        p = recipe.pad_crop
        padded = F.pad(x, (p, p, p, p))
        ij = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
        x = torch.stack(
            [padded[k, :, i : i + size, j : j + size] for k, (i, j) in enumerate(ij.tolist())]
        )
    if (
        recipe.rotate
        or recipe.scale != (1.0, 1.0)
        or recipe.translate
        or recipe.flips
        or recipe.vertical_flips
    ):
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(recipe.rotate)
        lo, hi = recipe.scale
        zoom = lo + (hi - lo) * torch.rand(n, generator=gen)
        sx = (
            torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            if recipe.flips
            else torch.ones(n)
        )
        sy = (
            torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
            if recipe.vertical_flips
            else torch.ones(n)
        )
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * recipe.translate * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1),
                torch.stack([sin * sx, cos * sy, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if recipe.intensity:
        gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * recipe.intensity)
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * recipe.intensity
        x = (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)
    return x


def _param_groups(model: Encoder, recipe: Recipe) -> list[dict[str, Any]]:
    decay, no_decay, proxies = [], [], []
    for name, p in model.named_parameters():
        if name == "proxies":
            proxies.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if proxies:
        groups.append(
            {"params": proxies, "weight_decay": 0.0, "lr": recipe.lr * recipe.proxy_lr_mult}
        )
    for g in groups:
        g.setdefault("lr", recipe.lr)
    return groups


def _optimizer(model: Encoder, recipe: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[g["lr"] for g in opt.param_groups],
            total_steps=recipe.epochs * steps_per_epoch,
            pct_start=0.1,
            div_factor=10.0,
            final_div_factor=200.0,
        )
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.1, patience=recipe.plateau_patience
        )
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def _loss_fn(
    model: Encoder, recipe: Recipe
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if model.cfg.uses_proxies:
        loss = NormalizedSoftmaxLoss(model.cfg.temperature, recipe.label_smoothing)
        return lambda emb, scores, y: loss(emb, y, model.proxies)
    return lambda emb, scores, y: F.cross_entropy(
        scores.float(), y, label_smoothing=recipe.label_smoothing
    )


@torch.no_grad()
def evaluate_split(
    model: Encoder, images: np.ndarray, labels: np.ndarray, recipe: Recipe, batch_size: int = 128
) -> dict[str, float]:
    """Validation accuracy (nearest proxy / argmax logits) and loss."""
    device = next(model.parameters()).device
    model.eval()
    loss_fn = _loss_fn(model, replace(recipe, label_smoothing=0.0))
    correct, total_loss = 0, 0.0
    for start in range(0, len(images), batch_size):
        x = to_model_input(
            torch.from_numpy(images[start : start + batch_size]).float() / 255.0, device
        )
        y = torch.as_tensor(labels[start : start + batch_size], device=device)
        with autocast(device):
            emb, scores = model.embed_and_score(x)
        total_loss += float(loss_fn(emb.float(), scores.float(), y)) * len(y)
        correct += int((scores.argmax(1) == y).sum())
    n = max(len(images), 1)
    return {"accuracy": correct / n, "loss": total_loss / n}


def resolve_recipe(opts: TrainOptions) -> Recipe:
    if opts.preset not in PRESETS:
        raise UserError(f"unknown preset {opts.preset!r}: choose {', '.join(PRESETS)}")
    recipe = PRESETS[opts.preset]
    changes: dict[str, Any] = {
        k: _checked_override(recipe, k, v) for k, v in opts.overrides.items()
    }
    if opts.epochs is not None:
        changes["epochs"] = opts.epochs
    if opts.image_size is not None:
        changes["image_size"] = opts.image_size
    try:
        recipe = replace(recipe, **changes)
    except TypeError as err:
        raise UserError(f"bad training override: {err}") from None
    if recipe.epochs < 1:
        raise UserError("--epochs must be at least 1")
    return recipe


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['rotate=30.0', 'scale=(0.8,1.2)'] -> {'rotate': 30.0, 'scale': (0.8, 1.2)}.

    Values are Python literals; their types are checked against the recipe in
    `resolve_recipe`."""
    import ast

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise UserError(
                f"--set {item!r}: expected KEY=VALUE with a Python literal value"
            ) from None
    return out


def _checked_override(recipe: Recipe, key: str, value: Any) -> Any:
    """A recipe override with the field's type (a user's `--set` is checked, not trusted)."""
    if key not in Recipe.__dataclass_fields__:
        raise UserError(f"unknown recipe field {key!r}: see karyosearch.train.Recipe")
    current = getattr(recipe, key)
    if isinstance(current, tuple):
        if not (
            isinstance(value, (tuple, list))
            and len(value) == len(current)
            and all(isinstance(v, (int, float)) for v in value)
        ):
            raise UserError(f"recipe field {key} takes {len(current)} numbers, not {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UserError(f"recipe field {key} takes True or False, not {value!r}")
        return value
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"recipe field {key} takes a number, not {value!r}")
        if isinstance(current, int) and not float(value).is_integer():
            raise UserError(f"recipe field {key} takes a whole number, not {value!r}")
        return type(current)(value)
    if value not in _CHOICES.get(key, ()):
        raise UserError(f"recipe field {key} takes one of {', '.join(_CHOICES[key])}")
    return value


_CHOICES = {
    "stem": STEMS,
    "optimizer": ("adamw", "sgd"),
    "schedule": ("onecycle", "plateau"),
}


def initialise(model: Encoder, source: Checkpoint, path: str) -> dict[str, Any]:
    """Copy the weights of checkpoint `source` (read from `path`) into `model`.

    The checkpoint must be of the same network (architecture, stem, classes; the input size
    may differ). Returns its training record, fingerprint and path, kept under the new
    record's "init" key so that `bench` checks the whole lineage (`evaluate.check_unseen`).
    """
    # The weights do not depend on the input size, so a network may move to another size
    # (fine-tuning at a higher resolution than it was trained at, say); nothing else may differ.
    differ = [
        f"{k} {getattr(source.config, k)!r} (here {getattr(model.cfg, k)!r})"
        for k in model.cfg.__dataclass_fields__
        if k != "image_size" and getattr(source.config, k) != getattr(model.cfg, k)
    ]
    if differ:
        raise UserError(f"--init {path}: another network: {'; '.join(differ)}")
    model.load_state_dict(source.state_dict)
    return {**source.train, "fingerprint": source.fingerprint, "path": str(path)}


def train(
    opts: TrainOptions,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """Train one encoder; returns the training record stored in the checkpoint.

    `log` receives one line per epoch; `progress(description, total)` may return an
    `advance(n)` callback for a progress bar (None: no bar).
    """
    out = Path(opts.out)
    last = out.with_name(out.name + ".last")
    resumed = read_checkpoint(last) if opts.resume and last.exists() else None
    if resumed is not None:  # a resumed run keeps its own recipe (the schedule depends on it)
        saved = dict(resumed.train["recipe"], scale=tuple(resumed.train["recipe"]["scale"]))
        recipe = Recipe(**saved)
        opts = replace(
            opts,
            arch=resumed.train["arch"],
            split=resumed.train["split"],
            seed=resumed.train["seed"],
            preset=resumed.train["preset"],
        )
    else:
        recipe = resolve_recipe(opts)
    device = pick_device(opts.device)
    torch.manual_seed(opts.seed)
    dataset: Dataset = read_dataset(opts.data, opts.layout)  # type: ignore[arg-type]
    split = split_dataset(dataset, opts.split, opts.seed)
    train_ix, val_ix = split.train, split.val
    source = None  # the checkpoint to start from, checked before the images are loaded
    if opts.init is not None and resumed is None:
        source = read_checkpoint(opts.init)
        for warning in check_unseen(
            source.train, dataset, opts.split, opts.seed, who="the --init checkpoint"
        ):
            log(f"warning: {warning}")
    if opts.limit is not None:
        train_ix, val_ix = train_ix[: opts.limit], val_ix[: max(opts.limit // 4, 1)]
    paths = [dataset.items[i].path for i in np.concatenate([train_ix, val_ix])]
    labels_all = np.asarray(dataset.labels)
    bar = progress("preparing images", len(paths)) if progress else None
    try:
        crops = load_all(paths, bar)
    except ImageError as err:
        raise UserError(f"training image unreadable: {err}") from None
    canvas = canvas_for(crops[: len(train_ix)], recipe.canvas_percentile)
    if canvas:
        log(
            f"fixed-scale canvas {canvas} px (p{recipe.canvas_percentile:g} of the training "
            "crops' long sides)"
        )
    images = prepare_all(crops, recipe.image_size, canvas)
    del crops
    x_train, x_val = images[: len(train_ix)], images[len(train_ix) :]
    y_train, y_val = labels_all[train_ix], labels_all[val_ix]

    cfg = EncoderConfig(
        arch=opts.arch,
        image_size=recipe.image_size,
        canvas=canvas,
        in_chans=2 if canvas else 1,
        stem=recipe.stem,
    )
    model = Encoder(cfg)
    init = None
    if source is not None:
        init = initialise(model, source, str(opts.init))
        log(f"initialised from {opts.init} (fingerprint {init['fingerprint']})")
    model = model.to(device).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval() if recipe.ema else None
    sampler = ClassBalancedBatchSampler(
        y_train, recipe.m_per_class, recipe.classes_per_batch, opts.seed
    )
    opt = _optimizer(model, recipe)
    sched = _scheduler(opt, recipe, len(sampler))
    loss_fn = _loss_fn(model, recipe)
    gen = torch.Generator().manual_seed(opts.seed)

    record: dict[str, Any] = {
        "dataset": str(dataset.root),
        "layout": dataset.layout,
        "split": opts.split,
        "seed": opts.seed,
        "preset": opts.preset,
        "arch": opts.arch,
        "image_size": recipe.image_size,
        "canvas": canvas,
        "recipe": asdict(recipe),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None,
        "autocast": "bf16" if autocast_dtype(device) is not None else None,
        "n_train": int(len(train_ix)),
        "n_val": int(len(val_ix)),
        "init": init,
        "curve": [],
        "best_epoch": None,
        "val_accuracy": None,
        "val_loss": None,
        "train_seconds": 0.0,
    }
    start_epoch, best = 0, (-1.0, float("inf"))
    if resumed is not None:
        state = resumed
        model.load_state_dict(state.state_dict)
        resume = state.optimizer or {}
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if ema is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        gen.set_state(resume["generator"])
        record = state.train
        start_epoch = int(resume["epoch"]) + 1
        best = (record["val_accuracy"] or -1.0, record["val_loss"] or float("inf"))
        log(f"resumed from {last} at epoch {start_epoch + 1}")

    started = time.monotonic() - record["train_seconds"]
    stale, step = 0, start_epoch * len(sampler)
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        sampler.set_epoch(epoch)
        seen, loss_sum = 0, 0.0
        advance = progress(f"epoch {epoch + 1}/{recipe.epochs}", len(sampler)) if progress else None
        for batch in sampler:
            x = torch.from_numpy(x_train[batch]).float().div_(255.0)
            x = x.unsqueeze(1) if x.ndim == 3 else x
            x = to_model_input(augment(x, recipe, gen), device)
            y = torch.as_tensor(y_train[batch], device=device)
            with autocast(device):
                emb, scores = model.embed_and_score(x)
            loss = loss_fn(emb, scores, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if recipe.schedule == "onecycle":
                sched.step()
            step += 1
            if ema is not None:
                _ema_update(ema, model, min(recipe.ema, (1 + step) / (10 + step)))
            seen += len(batch)
            loss_sum += loss.item() * len(batch)
            if advance is not None:
                advance(1)
        # The live weights and their EMA are both validated; the better one is kept (early on,
        # from scratch, the average of fast-moving weights can be far worse than the weights).
        evaluated, val, weights = model, evaluate_split(model, x_val, y_val, recipe), "live"
        if ema is not None:
            val_ema = evaluate_split(ema, x_val, y_val, recipe)
            if (val_ema["accuracy"], -val_ema["loss"]) >= (val["accuracy"], -val["loss"]):
                evaluated, val, weights = ema, val_ema, "ema"
        if recipe.schedule == "plateau":
            sched.step(val["loss"])
        elapsed = time.monotonic() - started
        point = {
            "epoch": epoch + 1,
            "seconds": round(elapsed, 1),
            "train_loss": loss_sum / max(seen, 1),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "weights": weights,
            "lr": opt.param_groups[0]["lr"],
        }
        record["curve"].append(point)
        record["train_seconds"] = elapsed
        improved = (val["accuracy"], -val["loss"]) > (best[0], -best[1])
        log(
            f"epoch {epoch + 1:3d}  {elapsed / 60:6.1f} min  train loss {point['train_loss']:.4f}  "
            f"val loss {val['loss']:.4f}  val acc {val['accuracy']:.4f} ({weights})"
            + ("  *" if improved else "")
        )
        if improved:
            best, stale = (val["accuracy"], val["loss"]), 0
            record.update(
                best_epoch=epoch + 1,
                val_accuracy=val["accuracy"],
                val_loss=val["loss"],
                best_weights=weights,
            )
            save_checkpoint(out, evaluated, record)
        else:
            stale += 1
        save_checkpoint(
            last,
            model,
            record,
            optimizer={
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "ema": ema.state_dict() if ema is not None else None,
                "generator": gen.get_state(),
            },
        )
        if recipe.patience and stale >= recipe.patience:
            log(f"early stop: no improvement for {recipe.patience} epochs")
            break
        if opts.max_minutes is not None and elapsed > opts.max_minutes * 60:
            log(f"stopping at the {opts.max_minutes:g}-minute budget")
            break
    # The best checkpoint carries the whole curve, not only the curve up to its epoch.
    if out.exists():
        best_ckpt = read_checkpoint(out)
        best_model = Encoder(best_ckpt.config)
        best_model.load_state_dict(best_ckpt.state_dict)
        save_checkpoint(out, best_model, record)
    return record


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)
