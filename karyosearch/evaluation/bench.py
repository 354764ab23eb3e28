"""The benchmark behind `karyosearch bench`: a checkpoint on the test part of a split.

The split is rebuilt from the dataset with the checkpoint's own split name and seed, so the
test images are exactly those the model never trained on. Asking for another split or seed
of the dataset the model was trained on is refused: its test part would overlap the
training part and every number would be flattered.

Reports accuracy (over images), macro precision / recall / F1 (over classes, see
`metrics.classification_report`) and Recall@K (see `metrics.recall_at_k`, not the
information-retrieval recall) under the JSON keys of the `bench` command, which scripts rely on:
`split, seed, n_test, accuracy, precision, recall, f1, recall_at_k`. Where the test part holds
crops of the cells whose labels their images contradict (`data.rulings`), `audited` gives
the same figures without them: the headline, by the ruling.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Dataset, Layout, read_dataset
from ..data.rulings import CONTRADICTED_CELLS, audited
from ..data.splits import split_dataset
from ..errors import UserError
from ..labels import CLASS_NAMES
from ..model.predict import predicted_classes
from ..util.runtime import device_name, timestamp, versions
from .figures import CURVE_KS, figures
from .metrics import classification_report, recall_at_k
from .provenance import resolve_split, same_dataset

BENCH_FORMAT = "karyosearch-bench/1"
REPORT_KS: tuple[int, ...] = (1, 2, 4, 8)  # the paper's Recall@K columns


@dataclass
class Evaluation:
    """What a benchmark run measured, and the test embeddings it measured it on."""

    result: dict[str, Any]  # the JSON of `karyosearch bench` (see the module docstring)
    embeddings: np.ndarray  # (n_test, D) float32 unit vectors of the test images
    labels: np.ndarray  # (n_test,) true class indices
    pred: np.ndarray  # (n_test,) predicted class indices
    paths: list[str]  # the test image files, in the rows' order
    figures: list[Path] = field(default_factory=list)  # PNGs written by `bench(figures_dir=)`


def _json_safe(value: Any) -> Any:
    """A JSON-writable copy: numbers, strings, lists and dicts; NaN and others become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return None


def evaluate(
    encoder: Any,
    dataset: Dataset,
    split: str | None = None,
    seed: int | None = None,
    part: str = "test",
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Benchmark `encoder` on a part of a split of `dataset` (default: its training split).

    Classification is nearest proxy (argmax of x . p_c) for the proxy networks and argmax
    of the logits for `resnext`. Raises UserError for a split that would leak training
    images into the test set, or when no test image can be read.
    """
    from ..model.embed import embed_files

    record: dict[str, Any] = dict(getattr(encoder, "train_record", {}) or {})
    name, number, warnings = resolve_split(record, dataset, split, seed)
    chosen = split_dataset(dataset, name, number).part(part)
    if (
        name == record.get("split")
        and number == record.get("seed")
        and same_dataset(record, dataset)
    ):
        rebuilt = split_dataset(dataset, name, number)
        for key, ix in (("n_train", rebuilt.train), ("n_val", rebuilt.val)):
            if key in record and int(record[key]) != len(ix):
                warnings.append(
                    f"the checkpoint trained on {record[key]} {key[2:]} images, the rebuilt split "
                    f"has {len(ix)}: has the dataset changed since training?"
                )
    if len(chosen) == 0:
        raise UserError(f"the {part} part of the {name!r} split (seed {number}) is empty")
    items = [dataset.items[i] for i in chosen]
    started = time.monotonic()
    embedded = embed_files(encoder, [it.path for it in items], batch_size, progress=progress)
    label_of = {it.path: it.label for it in items}
    cell_of = {it.path: it.cell_id for it in items}
    labels = np.asarray([label_of[p] for p in embedded.paths], dtype=np.int64)
    if len(labels) == 0:
        raise UserError(f"none of the {len(items)} {part} images could be read")
    cfg = encoder.cfg
    pred = predicted_classes(embedded.scores)  # nearest proxy, or argmax of the logits
    report = classification_report(pred, labels, len(CLASS_NAMES))
    curve = recall_at_k(embedded.embeddings, labels, CURVE_KS)
    seconds = time.monotonic() - started
    device = next(encoder.parameters()).device
    result: dict[str, Any] = {
        "format": BENCH_FORMAT,
        "split": name,
        "seed": number,
        "part": part,
        **_figures(report, curve, len(labels)),
        "recall_at_k_curve": {str(k): v for k, v in curve.items()},
        "macro_average": "over classes present in the truth or the predictions; 0/0 counts as 0",
        "classes_averaged": int(report.averaged.sum()),
        "per_class_accuracy": dict(
            zip(CLASS_NAMES, report.per_class_accuracy.tolist(), strict=True)
        ),
        "per_class_support": dict(zip(CLASS_NAMES, report.support.tolist(), strict=True)),
        "per_class_f1": dict(zip(CLASS_NAMES, report.per_class_f1.tolist(), strict=True)),
        "confusion": report.confusion.tolist(),
        "class_names": list(CLASS_NAMES),
        "arch": cfg.arch,
        "image_size": cfg.image_size,
        "stem": cfg.stem,
        "preprocess_version": cfg.preprocess_version,
        "classifier": "nearest proxy" if cfg.uses_proxies else "argmax logits",
        "fingerprint": getattr(encoder, "fingerprint", None),
        "preset": record.get("preset"),
        "train_seconds": record.get("train_seconds"),
        "train_device": record.get("device"),
        "train": record,
        "dataset": {
            "root": str(dataset.root),
            "layout": dataset.layout,
            "images": len(dataset),
        },
        "errors": [{"path": str(e.path), "reason": e.reason} for e in embedded.errors],
        # entries of the dataset that are in no split: unlabelled, or no readable regular file
        "rejected": [{"path": r.path, "reason": r.reason} for r in dataset.rejected],
        "warnings": warnings,
        "eval_seconds": seconds,
        "eval_device": device.type,
        "eval_device_name": device_name(device),
        "versions": versions(),
        "created": timestamp(),
    }
    kept = audited([cell_of[p] for p in embedded.paths])
    if not kept.all():
        result["audited"] = _audited(embedded.embeddings[kept], pred[kept], labels[kept])
    return Evaluation(_json_safe(result), embedded.embeddings, labels, pred, embedded.paths)


def _figures(report: Any, curve: dict[int, float], n: int) -> dict[str, Any]:
    """The figures DESIGN.md names, of n test crops: accuracy, macro precision / recall / F1
    (`report`, a `metrics.classification_report`) and Recall@K (`curve`) at REPORT_KS."""
    return {
        "n_test": n,
        "accuracy": report.accuracy,
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "recall_at_k": {str(k): curve[k] for k in REPORT_KS},
    }


def _audited(embeddings: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The headline figures of a test part without the label-contradicted cells' crops."""
    report = classification_report(pred, labels, len(CLASS_NAMES))
    curve = recall_at_k(embeddings, labels, REPORT_KS)
    return {"left_out_cells": list(CONTRADICTED_CELLS), **_figures(report, curve, len(labels))}


def bench(
    data: str | os.PathLike | Dataset,
    model: str | os.PathLike | Any,
    split: str | None = None,
    seed: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    layout: Layout = "auto",
    figures_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """`karyosearch bench`: read the dataset, load the checkpoint on `device`, `evaluate` it on
    its split's test part and, with `figures_dir`, write the figures there (`figures`).

    `model` is a checkpoint path (recorded as `model_path` in the result) or an Encoder.
    """
    from ..model.checkpoint import load_encoder
    from ..util.runtime import pick_device

    dataset = data if isinstance(data, Dataset) else read_dataset(data, layout)
    is_path = isinstance(model, (str, os.PathLike))
    encoder = load_encoder(model, pick_device(device)) if is_path else model
    ev = evaluate(encoder, dataset, split, seed, batch_size=batch_size, progress=progress)
    if is_path:
        ev.result["model_path"] = str(model)
    if figures_dir is not None:
        ev.figures = figures(ev.result, ev.embeddings, ev.labels, figures_dir)
    return ev
