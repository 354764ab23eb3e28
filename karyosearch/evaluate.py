"""The benchmark behind `karyosearch bench`: a checkpoint on the test part of a split.

The split is rebuilt from the dataset with the checkpoint's own split name and seed, so the
test images are exactly those the model never trained on. Asking for another split or seed
of the dataset the model was trained on is refused: its test part would overlap the
training part and every number would be flattered.

Reports accuracy (over images), macro precision / recall / F1 (over classes, see
`metrics.classification_report`) and Recall@K (see `metrics.recall_at_k`, not the
information-retrieval recall) under the JSON keys fixed in DESIGN.md.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import Dataset
from .errors import UserError
from .labels import CLASS_NAMES
from .machine import cpu_name
from .metrics import classification_report, nearest_proxy_predict, recall_at_k
from .splits import SPLITS, split_dataset

BENCH_FORMAT = "karyosearch-bench/1"
CURVE_KS: tuple[int, ...] = tuple(range(1, 33))  # Recall@K curve for the figure and the JSON
REPORT_KS: tuple[int, ...] = (1, 2, 4, 8)  # the paper's Recall@K columns


@dataclass
class Evaluation:
    """What a benchmark run measured, and the test embeddings it measured it on."""

    result: dict[str, Any]  # the JSON of `karyosearch bench` (keys fixed in DESIGN.md)
    embeddings: np.ndarray  # (n_test, 2048) float32 unit vectors of the test images
    labels: np.ndarray  # (n_test,) true class indices
    pred: np.ndarray  # (n_test,) predicted class indices
    paths: list[str]  # the test image files, in the rows' order


def _same_dataset(record: dict[str, Any], dataset: Dataset) -> bool:
    """Whether the checkpoint was trained on this dataset (True when it cannot tell).

    The same folder, or a copy of it elsewhere (same layout and folder name), is the same
    dataset; only a dataset that differs in layout or name counts as another one.
    """
    root = record.get("dataset")
    if isinstance(root, dict):
        root = root.get("root")
    if not root:
        return True
    if Path(str(root)) == dataset.root:
        return True
    layout = record.get("layout")
    if layout and layout != dataset.layout:
        return False
    return Path(str(root)).name == dataset.root.name


def lineage(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A checkpoint's training record, then those of the checkpoints it was initialised from
    (`train --init`), each nested under its successor's "init" key."""
    chain = [record]
    while chain[-1].get("init"):
        chain.append(chain[-1]["init"])
    return chain


def check_unseen(
    record: dict[str, Any], dataset: Dataset, name: str, number: int, who: str = "the model"
) -> list[str]:
    """Refuse a test part of `dataset` that the training behind `record` may have seen.

    Every record of the lineage that trained on this dataset must have trained on the same
    split and seed (its training part is then disjoint from this test part). Returns warnings
    for records that cannot tell; raises UserError for an overlap.
    """
    warnings: list[str] = []
    for depth, rec in enumerate(lineage(record)):
        if not _same_dataset(rec, dataset):
            continue
        whose = who if depth == 0 else f"a checkpoint that {who} started from (--init)"
        trained_split, trained_seed = rec.get("split"), rec.get("seed")
        if trained_split is not None and name != trained_split:
            raise UserError(
                f"{whose} was trained on the {trained_split!r} split of this dataset: the test "
                f"part of the {name!r} split would overlap its training images (use split "
                f"{trained_split}, or a checkpoint trained with --split {name})"
            )
        if trained_seed is not None and number != int(trained_seed):
            raise UserError(
                f"{whose} was trained on split seed {trained_seed} of this dataset: the test "
                f"part of seed {number} would overlap its training images (use seed "
                f"{trained_seed}, or a checkpoint trained with --seed {number})"
            )
        if trained_split is None or trained_seed is None:
            warnings.append(
                f"{whose} does not record its training split and seed: the test images "
                "may overlap its training images"
            )
    return warnings


def resolve_split(
    record: dict[str, Any], dataset: Dataset, split: str | None, seed: int | None
) -> tuple[str, int, list[str]]:
    """The split name and seed to test on, and warnings; refuses a leaking choice.

    Defaults come from the checkpoint's training record. A split or seed other than the one
    the model (or a checkpoint it was initialised from) trained with is refused on the same
    dataset (its test part would overlap the training images) and allowed on another dataset.
    """
    trained_split, trained_seed = record.get("split"), record.get("seed")
    name = split if split is not None else (trained_split or "paper")
    number = seed if seed is not None else (int(trained_seed) if trained_seed is not None else 0)
    if name not in SPLITS:
        raise UserError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    warnings = check_unseen(record, dataset, name, number)
    if not _same_dataset(record, dataset):
        warnings.append(
            f"the model was trained on another dataset ({record.get('dataset')}); "
            f"testing on the {name!r} split, seed {number}, of {dataset.root}"
        )
    return name, number, warnings


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


def _versions() -> dict[str, str]:
    import faiss
    import torch

    from . import __version__

    return {
        "karyosearch": __version__,
        "torch": torch.__version__,
        "faiss": getattr(faiss, "__version__", "?"),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


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
    import torch

    from .inference import embed_files

    record: dict[str, Any] = dict(getattr(encoder, "train_record", {}) or {})
    name, number, warnings = resolve_split(record, dataset, split, seed)
    chosen = split_dataset(dataset, name, number).part(part)
    if (
        name == record.get("split")
        and number == record.get("seed")
        and _same_dataset(record, dataset)
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
    labels = np.asarray([label_of[p] for p in embedded.paths], dtype=np.int64)
    if len(labels) == 0:
        raise UserError(f"none of the {len(items)} {part} images could be read")
    cfg = encoder.cfg
    if cfg.uses_proxies:
        proxies = encoder.unit_proxies().detach().float().cpu().numpy()
        pred = nearest_proxy_predict(embedded.embeddings, proxies)
    else:
        pred = embedded.scores.argmax(axis=1).astype(np.int64)
    report = classification_report(pred, labels, len(CLASS_NAMES))
    curve = recall_at_k(embedded.embeddings, labels, CURVE_KS)
    seconds = time.monotonic() - started
    device = next(encoder.parameters()).device
    result: dict[str, Any] = {
        "format": BENCH_FORMAT,
        "split": name,
        "seed": number,
        "part": part,
        "n_test": len(labels),
        "accuracy": report.accuracy,
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "recall_at_k": {str(k): curve[k] for k in REPORT_KS},
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
        "warnings": warnings,
        "eval_seconds": seconds,
        "eval_device": device.type,
        "eval_device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else cpu_name(),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Evaluation(_json_safe(result), embedded.embeddings, labels, pred, embedded.paths)


def _class_colours() -> list[Any]:
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    dark2 = matplotlib.colormaps["Dark2"].colors
    return list(tab20) + list(dark2[:4])


def figures(
    result: dict[str, Any], embeddings: np.ndarray, labels: np.ndarray, out_dir: str | Path
) -> list[Path]:
    """Write tsne.png (the paper's Figure 2), confusion.png and recall_at_k.png to `out_dir`.

    t-SNE needs at least 5 test images; with fewer its figure is left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{result.get('arch')}, {result.get('split')} split, seed {result.get('seed')}"
    written: list[Path] = []
    labels = np.asarray(labels)

    if len(embeddings) >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(embeddings) - 1) / 3))
        xy = TSNE(
            n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=0
        ).fit_transform(np.asarray(embeddings, dtype=np.float32))
        colours = _class_colours()
        fig, ax = plt.subplots(figsize=(8, 8))
        for c, name in enumerate(CLASS_NAMES):
            mask = labels == c
            if not mask.any():
                continue
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=colours[c], label=name, alpha=0.8)
            cx, cy = np.median(xy[mask], axis=0)
            ax.annotate(name, (cx, cy), fontsize=9, weight="bold", ha="center", va="center")
        ax.set_title(f"t-SNE of test embeddings ({title})")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=2, fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5))
        fig.tight_layout()
        written.append(_save(fig, out / "tsne.png"))

    cm = np.asarray(result["confusion"], dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    n = len(CLASS_NAMES)
    ax.set_xticks(range(n), CLASS_NAMES, fontsize=7)
    ax.set_yticks(range(n), CLASS_NAMES, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i, j in zip(*np.nonzero(cm), strict=True):
        ax.text(
            j,
            i,
            int(cm[i, j]),
            ha="center",
            va="center",
            fontsize=5,
            color="white" if frac[i, j] > 0.5 else "black",
        )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(f"Confusion matrix, accuracy {100 * (result.get('accuracy') or 0):.2f}% ({title})")
    fig.tight_layout()
    written.append(_save(fig, out / "confusion.png"))

    curve = result.get("recall_at_k_curve")
    if curve:
        ks = [int(k) for k in curve]
        values = [curve[str(k)] for k in ks]
    else:
        computed = recall_at_k(embeddings, labels, CURVE_KS)
        ks, values = list(computed), list(computed.values())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [100 * v for v in values], marker="o", markersize=3)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Recall@K ({title})", fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out / "recall_at_k.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
