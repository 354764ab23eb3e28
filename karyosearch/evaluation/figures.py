"""Figures of a benchmark run: the t-SNE of the test embeddings (the paper's Figure 2), the
confusion matrix and the Recall@K curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..labels import CLASS_NAMES
from .metrics import recall_at_k

CURVE_KS: tuple[int, ...] = tuple(range(1, 33))  # Recall@K curve for the figure and the JSON


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
