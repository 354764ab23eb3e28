"""Batched embedding: image files or prepared arrays through an encoder, fast on CPU and GPU.

Files go through the one image pipeline (`data.image.load`, then `prepare_input`), so the
same pixels reach the network as in training. The next batches are read on a thread pool
while the network runs on the current one.

torch is imported when a torch encoder runs, so a query on ONNX Runtime (`onnx_encoder`) never
imports it.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..data.image import ImageError, Polarity, foreground_area, load, prepare_input
from ..errors import UserError
from ..util.runtime import autocast
from . import EMBEDDING_DIM
from .onnx_encoder import OnnxEncoder

if TYPE_CHECKING:
    import torch

    from .encoder import Encoder

F = TypeVar("F", bound=Callable[..., Any])
READ_AHEAD = 2  # batches read ahead of the one the network runs on
READERS = 4  # reader threads at most (PIL decodes with the GIL released)


def _no_grad(fn: F) -> F:
    """`torch.no_grad()` as a decorator that imports torch only when `fn` runs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def to_model_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, S, S) or (N, C, S, S) images in [0, 1] -> (N, C, S, S) channels_last on `device`."""
    import torch

    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.to(device).contiguous(memory_format=torch.channels_last)


class NonFiniteError(UserError):
    """The encoder gave NaN or infinite outputs: a broken model, never to reach an index."""

    def __init__(self, message: str, rows: Sequence[int]):
        self.rows = list(rows)  # positions of the offending images in the input
        super().__init__(message)


def _finite_rows(e: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.isfinite(e).all(axis=1) & np.isfinite(s).all(axis=1)


@_no_grad
def embed_arrays(
    encoder: Encoder, images: np.ndarray, batch_size: int = 128, fast: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings (N, 2048) float32 and class scores (N, classes) of prepared images.

    Outputs are checked: a row that is not finite under `fast` (reduced precision can
    overflow) is embedded again in float32; one still not finite raises NonFiniteError
    (a UserError), so NaN never reaches an index, a benchmark or a karyotype.
    """
    import torch

    device = next(encoder.parameters()).device
    encoder.eval()
    embs, scores = [], []
    bad: list[int] = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start : start + batch_size], device)
        with autocast(device, fast):
            e, s = encoder.embed_and_score(x)
        e, s = e.float().cpu().numpy(), s.float().cpu().numpy()
        ok = _finite_rows(e, s)
        if not ok.all() and fast:
            redo = np.flatnonzero(~ok)
            e2, s2 = encoder.embed_and_score(x[torch.as_tensor(redo, device=device)].float())
            e[redo], s[redo] = e2.float().cpu().numpy(), s2.float().cpu().numpy()
            ok = _finite_rows(e, s)
        bad.extend(int(start + i) for i in np.flatnonzero(~ok))
        embs.append(e)
        scores.append(s)
    if bad:
        raise NonFiniteError(
            f"the encoder gave non-finite outputs (NaN or inf) for {len(bad)} of {len(images)} "
            "images: the model is broken; nothing was stored",
            bad,
        )
    if not embs:
        return np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(
            (0, encoder.cfg.num_classes), np.float32
        )
    return np.concatenate(embs), np.concatenate(scores)


@dataclass
class EmbeddedFiles:
    """Result of embedding a list of files: rows for those that loaded, errors for the rest."""

    paths: list[str]  # files that were embedded, in input order
    embeddings: np.ndarray  # (len(paths), 2048) float32, unit norm
    scores: np.ndarray  # (len(paths), classes) class scores (see Encoder.embed_and_score)
    errors: list[ImageError]  # files that could not be read, with the reason
    areas: np.ndarray  # (len(paths),) chromosome pixels per crop (image.foreground_area)


def read_ahead(
    read: Callable[[Any], Any],
    items: Sequence[Any],
    batch_size: int,
    workers: int = READERS,
    ahead: int = READ_AHEAD,
) -> Iterator[tuple[list[Any], list[Any]]]:
    """(batch, [read(item) for item in batch]) batch by batch, in order, while the next `ahead`
    batches are read on a pool of `workers` threads: the caller's work on one batch (the
    network) overlaps the reading of the next. `ahead=0` reads each batch only when asked.
    A single item (a query's image) is read in the calling thread: there is nothing to
    overlap, and starting the pool's threads cost about 3 ms of a 25 ms query."""
    if len(items) == 1:
        yield list(items), [read(items[0])]
        return
    batches = (list(items[i : i + batch_size]) for i in range(0, len(items), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[list[Any], list[Any]]] = deque()

        def submit() -> None:
            batch = next(batches, None)
            if batch is not None:
                pending.append((batch, [pool.submit(read, item) for item in batch]))

        for _ in range(1 + ahead):
            submit()
        while pending:
            batch, futures = pending.popleft()
            results = [f.result() for f in futures]
            if ahead:
                submit()
            yield batch, results
            if not ahead:
                submit()


def embed_files(
    encoder: Encoder | OnnxEncoder,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    polarity: Polarity = "auto",
    fast: bool = True,
    progress: Callable[[int], None] | None = None,
) -> EmbeddedFiles:
    """Load, prepare and embed files; unreadable files are collected as errors, not raised.

    The next batches are read on a thread pool while the network runs (`read_ahead`). Each
    crop's chromosome area is kept too (the network sees every crop at one size).
    `progress(n)` is called with the number of files finished after each batch. `encoder` is
    a torch `Encoder` or an `OnnxEncoder` (float32 always; `fast` is for torch's bf16).
    """
    size = encoder.cfg.image_size
    ok_paths: list[str] = []
    errors: list[ImageError] = []
    embs, scores, areas = [], [], []

    def read(path: str | os.PathLike) -> tuple[np.ndarray, int] | ImageError:
        try:
            crop = load(path, polarity, encoder.cfg.preprocess_version)
        except ImageError as err:
            return err
        return prepare_input(crop, size, encoder.cfg.canvas), foreground_area(crop)

    def network(arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(encoder, OnnxEncoder):
            return embed_arrays(encoder, arrays, batch_size, fast)
        e, s = encoder.embed_and_score(arrays, batch_size)
        bad = np.flatnonzero(~_finite_rows(e, s))
        if len(bad):
            raise NonFiniteError("non-finite outputs", bad.tolist())
        return e, s

    readers = min(READERS, os.cpu_count() or 1)
    for chunk, results in read_ahead(read, list(paths), batch_size, readers, READ_AHEAD):
        arrays = []
        for path, result in zip(chunk, results, strict=True):
            if isinstance(result, ImageError):
                errors.append(result)
            else:
                ok_paths.append(str(path))
                arrays.append(result[0])
                areas.append(result[1])
        if arrays:
            try:
                e, s = network(np.stack(arrays))
            except NonFiniteError as err:
                done = ok_paths[len(ok_paths) - len(arrays) :]
                names = [done[i] for i in err.rows]
                raise NonFiniteError(
                    f"the encoder gave non-finite outputs (NaN or inf) for "
                    f"{', '.join(names[:3])}"
                    + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                    + ": the model is broken; nothing was stored",
                    err.rows,
                ) from None
            embs.append(e)
            scores.append(s)
        if progress is not None:
            progress(len(chunk))
    n_classes = encoder.cfg.num_classes
    return EmbeddedFiles(
        ok_paths,
        np.concatenate(embs) if embs else np.zeros((0, EMBEDDING_DIM), np.float32),
        np.concatenate(scores) if scores else np.zeros((0, n_classes), np.float32),
        errors,
        np.asarray(areas, dtype=np.float32),
    )
