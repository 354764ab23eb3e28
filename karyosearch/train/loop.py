"""The training loop: one encoder trained on a split's training part with a `Recipe`.

Class-balanced batches (`sampler`), the normalized softmax loss (`losses`), augmentation on
whole batches (`augment`), validation each epoch of the live weights and their EMA.

The best checkpoint by validation accuracy is kept at `out`; `out` + `.last` holds the latest
epoch with optimiser state for `resume`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import Dataset, read_dataset
from ..data.image import PREPROCESS_VERSION, ImageError
from ..data.splits import split_dataset
from ..errors import UserError
from ..evaluation.provenance import check_unseen, same_dataset
from ..model.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from ..model.embed import to_model_input
from ..model.encoder import Encoder, EncoderConfig
from ..util.runtime import autocast, autocast_dtype, device_name, pick_device
from .augment import augment, canvas_for, load_all, prepare_all, source_scale
from .losses import NormalizedSoftmaxLoss
from .recipe import Recipe, TrainOptions, resolve_recipe
from .sampler import ClassBalancedBatchSampler


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
        loss = NormalizedSoftmaxLoss(model.cfg.temperature, recipe.label_smoothing, recipe.margin)
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
    loss_fn = _loss_fn(model, replace(recipe, label_smoothing=0.0, margin=0.0))
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


_NOT_IN_THE_WEIGHTS = ("image_size", "preprocess_version")


def initialise(model: Encoder, source: Checkpoint, path: str) -> dict[str, Any]:
    """Copy the weights of checkpoint `source` (read from `path`) into `model`.

    The checkpoint must be of the same network (architecture, stem, classes; the input size
    may differ). Returns its training record, fingerprint and path, kept under the new
    record's "init" key so that `bench` checks the whole lineage
    (`evaluation.provenance.check_unseen`).
    """
    # The weights do not depend on the input size or the preprocessing, so a network may move
    # to another size (fine-tuning at a higher resolution than it was trained at, say) and to
    # this karyosearch's preprocessing (the new model is trained on it); nothing else may differ.
    differ = [
        f"{k} {getattr(source.config, k)!r} (here {getattr(model.cfg, k)!r})"
        for k in model.cfg.__dataclass_fields__
        if k not in _NOT_IN_THE_WEIGHTS and getattr(source.config, k) != getattr(model.cfg, k)
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
    """Train one encoder; returns the training record stored in the checkpoint, with the
    `image_size` (which the checkpoint keeps once, in its config).

    `log` receives one line per epoch; `progress(description, total)` may return an
    `advance(n)` callback for a progress bar (None: no bar).
    """
    out = Path(opts.out)
    last = out.with_name(out.name + ".last")
    resumed = read_checkpoint(last) if opts.resume and last.exists() else None
    if resumed is not None and resumed.config.preprocess_version != PREPROCESS_VERSION:
        raise UserError(
            f"--resume {last}: that run was started on preprocessing "
            f"v{resumed.config.preprocess_version}, this karyosearch trains on "
            f"v{PREPROCESS_VERSION}; finish it with the karyosearch that started it, or start "
            "afresh (without --resume)"
        )
    if resumed is not None:  # a resumed run keeps its own recipe (the schedule depends on it)
        saved = dict(resumed.train["recipe"], scale=tuple(resumed.train["recipe"]["scale"]))
        saved["image_size"] = resumed.config.image_size  # stored once, in the config
        recipe = Recipe(**saved)
        also = resumed.train.get("also") or {}
        opts = replace(
            opts,
            arch=resumed.train["arch"],
            split=resumed.train["split"],
            seed=resumed.train["seed"],
            preset=resumed.train["preset"],
            also=also.get("dataset"),
            also_split=also.get("split"),
            also_seed=also.get("seed"),
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
    also, also_paths, also_labels = _also_part(opts, dataset)
    if opts.limit is not None:
        train_ix, val_ix = train_ix[: opts.limit], val_ix[: max(opts.limit // 4, 1)]
        also_paths, also_labels = also_paths[: opts.limit], also_labels[: opts.limit]
    n_train = len(train_ix) + len(also_paths)  # the main training part, then the --also one
    paths = [dataset.items[i].path for i in train_ix] + also_paths
    paths += [dataset.items[i].path for i in val_ix]
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
    scale_train = torch.from_numpy(source_scale(crops[:n_train], recipe.image_size))
    del crops
    x_train, x_val = images[:n_train], images[n_train:]
    y_train = np.concatenate([labels_all[train_ix], also_labels]).astype(labels_all.dtype)
    y_val = labels_all[val_ix]

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
        y_train,
        recipe.m_per_class,
        recipe.classes_per_batch,
        opts.seed,
        extra=np.arange(n_train) >= len(train_ix) if len(also_paths) else None,
        share=recipe.also_share,
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
        "canvas": canvas,
        # the image size is the checkpoint config's (stored once, there)
        "recipe": {k: v for k, v in asdict(recipe).items() if k != "image_size"},
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None,
        "autocast": "bf16" if autocast_dtype(device) is not None else None,
        "n_train": int(len(train_ix)),
        "n_val": int(len(val_ix)),
        "init": init,
        "also": also,
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
            x = to_model_input(augment(x, recipe, gen, scale_train[batch]), device)
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
    return {**record, "image_size": recipe.image_size}


def _also_part(opts: TrainOptions, dataset: Dataset) -> tuple[dict | None, list, np.ndarray]:
    """The training part of `opts.also` (joint training): its record for the checkpoint
    (dataset, layout, split, seed, count; `evaluation.provenance` follows it as it follows
    `--init`), its image paths and class indices. None, [], [] without --also."""
    if opts.also is None:
        return None, [], np.zeros(0, np.int64)
    other = read_dataset(opts.also, "auto")
    record = {"dataset": str(other.root), "layout": other.layout}
    if same_dataset(record, dataset):
        raise UserError(f"--also {opts.also}: the dataset being trained on; give another one")
    name = opts.also_split if opts.also_split is not None else opts.split
    number = opts.also_seed if opts.also_seed is not None else opts.seed
    train_ix = split_dataset(other, name, number).train
    record.update(split=name, seed=number, n_train=int(len(train_ix)))
    labels = np.asarray(other.labels)[train_ix]
    return record, [other.items[i].path for i in train_ix], labels


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)
