"""The encoder on ONNX Runtime, for queries: no torch import, and a faster single image.

A query embeds one image or a few. On 2 cores with other work running, ONNX Runtime ran the
64 px encoder on one image in 12-17 ms where PyTorch eager took 40-140 ms (bf16 autocast or
fp32), and `import onnxruntime` plus the session take about 0.3 s where `import torch`, the
checkpoint and the first forward pass take 2-4 s (benchmarks/bench_query.py,
results/query.json). Its embeddings are the float32 network's to a cosine of 0.99999.

The exported model is a cache, never the source of truth: it is made from the checkpoint
(`export_onnx`, with torch) the first time a query needs it, checked against PyTorch on a
batch (cosine >= `MIN_COSINE`), and stored by the weights' fingerprint under the user's cache
folder (`cache_dir`). Its metadata carry the fingerprint and the `EncoderConfig`, so the file
alone says which model it is. Where onnxruntime is missing, `KARYOSEARCH_ONNX=0` is set, or
the export fails, queries run on PyTorch as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from ..util.atomic import atomic_path
from . import EMBEDDING_DIM
from .config import EncoderConfig

EXPORT_VERSION = 1  # bumped when the exported graph changes; part of the cache file name
OPSET = 17  # ONNX opset of the export
MIN_COSINE = 0.9999  # an export whose embeddings differ more from PyTorch's is not used


def enabled() -> bool:
    """Whether queries may run on ONNX Runtime: it is installed (with `onnx`, which the export
    needs) and `KARYOSEARCH_ONNX` is not "0"."""
    if os.environ.get("KARYOSEARCH_ONNX") == "0":
        return False
    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def cache_dir() -> Path:
    """Where exported encoders are kept: `$KARYOSEARCH_CACHE/onnx`, else
    `$XDG_CACHE_HOME/karyosearch/onnx` (by default ~/.cache/karyosearch/onnx)."""
    root = os.environ.get("KARYOSEARCH_CACHE")
    if root:
        return Path(root) / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "karyosearch" / "onnx"


def cached_path(fingerprint: str) -> Path:
    return cache_dir() / f"{fingerprint}-v{EXPORT_VERSION}.onnx"


class OnnxEncoder:
    """An exported encoder: (N, C, S, S) float32 images in [0, 1] -> unit embeddings (N, 2048)
    and class scores (N, classes), as `Encoder.embed_and_score` gives them (in float32)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _usable_cores()
        options.inter_op_num_threads = 1
        # Idle workers sleep, as karyosearch sets OpenMP's wait policy (karyosearch/__init__):
        # spinning workers take the cores other processes (or a server's threads) need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.fingerprint: str = meta.get("fingerprint", "")
        self.cfg = EncoderConfig(**json.loads(meta["config"]))
        self.export_version = int(meta.get("export_version", 0))
        self.train_record: dict[str, Any] = {}

    @property
    def score_temperature(self) -> float:
        """As `Encoder.score_temperature`: T for proxy cosines, 1 for logits (scores / T)."""
        return self.cfg.temperature if self.cfg.uses_proxies else 1.0

    def embed_and_score(
        self, images: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and class scores of prepared images, (N, S, S) or (N, C, S, S)."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        embs, scores = [], []
        for start in range(0, len(x), batch_size):
            e, s = self.session.run(
                None, {"images": np.ascontiguousarray(x[start : start + batch_size])}
            )
            embs.append(e)
            scores.append(s)
        if not embs:
            return np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(
                (0, self.cfg.num_classes), np.float32
            )
        return np.concatenate(embs), np.concatenate(scores)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def export_onnx(encoder: Any, path: str | os.PathLike) -> None:
    """Export a (torch) `Encoder`'s `embed_and_score` in float32 to an ONNX file (atomically),
    with its fingerprint and config in the metadata; any batch size."""
    import warnings

    import onnx
    import torch

    class EmbedAndScore(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inner.embed_and_score(x)

    cfg = encoder.cfg
    example = torch.rand(2, cfg.in_chans, cfg.image_size, cfg.image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            EmbedAndScore(encoder.float().eval()),
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=["embeddings", "scores"],
            dynamic_axes={"images": {0: "n"}, "embeddings": {0: "n"}, "scores": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnx.load(str(tmp))
        meta = {
            "fingerprint": getattr(encoder, "fingerprint", ""),
            "config": json.dumps(asdict(cfg)),
            "export_version": str(EXPORT_VERSION),
        }
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))


def agreement(encoder: Any, exported: OnnxEncoder, n: int = 8, seed: int = 0) -> float:
    """The smallest cosine between PyTorch's float32 embeddings and the export's, on `n`
    random images."""
    import torch

    cfg = encoder.cfg
    rng = np.random.default_rng(seed)
    x = rng.random((n, cfg.in_chans, cfg.image_size, cfg.image_size), dtype=np.float32)
    with torch.no_grad():
        reference = encoder.float().eval()(torch.from_numpy(x)).numpy()
    ours, _ = exported.embed_and_score(x)
    return float(np.min(np.sum(reference * ours, axis=1)))


def load_cached(fingerprint: str) -> OnnxEncoder | None:
    """The cached export of the model with `fingerprint`, or None (none, or unreadable)."""
    path = cached_path(fingerprint)
    if not path.is_file():
        return None
    try:
        exported = OnnxEncoder(path)
    except Exception:  # a truncated or foreign file: export again
        return None
    if exported.fingerprint != fingerprint or exported.export_version != EXPORT_VERSION:
        return None
    return exported


def onnx_encoder(fingerprint: str, checkpoint: str | os.PathLike) -> OnnxEncoder | None:
    """The encoder with `fingerprint` on ONNX Runtime: from the cache, else exported from
    `checkpoint` now (torch; seconds, once) and cached. None where ONNX Runtime is not
    `enabled`, the checkpoint is another model, or the export fails or disagrees with PyTorch
    (the caller then runs PyTorch)."""
    if not enabled() or not fingerprint:
        return None
    found = load_cached(fingerprint)
    if found is not None:
        return found
    from .checkpoint import load_encoder

    encoder = load_encoder(checkpoint)
    if encoder.fingerprint != fingerprint:
        return None
    path = cached_path(fingerprint)
    try:
        export_onnx(encoder, path)
        exported = OnnxEncoder(path)
        if agreement(encoder, exported) >= MIN_COSINE:
            return exported
    except Exception:  # no export on this torch/onnx pair: PyTorch serves the query
        pass
    path.unlink(missing_ok=True)
    return None
