"""The search engine API that notebooks and the command line share: query an index with
images or vectors (`SearchIndex`); build, update and prune it with `search.update`:

```python
from karyosearch.search.engine import SearchIndex
from karyosearch.search.update import build_or_update, remove

report = build_or_update("indexes/default", "data/bioimlab", "model.pt")  # incremental
index = SearchIndex.open("indexes/default")                  # embeds with the index's model
for r in index.query_images(["crop.png"], k=8):
    print(r.predicted.label, r.knn_label, [n.path for n in r.neighbours])
remove("indexes/default", ["data/bioimlab/single_chromosomes/7"])   # a file or a folder
```

Images are embedded with the model that built the index, and its neighbours are the stored
rows with the same int64 ids as in FAISS. Opened without a model, on the CPU, an index embeds
its queries on ONNX Runtime where it is installed (`model.onnx_encoder`: no torch import,
about 3x faster on one image), else on PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.files import file_identity
from ..data.image import ImageError
from ..errors import UserError
from ..labels import CLASS_NAMES
from ..model.predict import (
    ArchiveEvidence,
    ArchiveSetting,
    Prediction,
    archive_call,
    neighbour_votes,
    predict,
)
from ..util.runtime import pick_device
from .folder import DEFAULT_INDEX_DIR, IndexCard, IndexFolder, check_encoder, read_index_folder
from .store import Rows

if TYPE_CHECKING:
    from ..model.checkpoint import ModelLike
    from ..model.encoder import Encoder
    from ..model.onnx_encoder import OnnxEncoder

PathLike = str | os.PathLike


@dataclass
class Neighbour:
    rank: int  # 1 = most similar
    id: int  # int64 id, the same in FAISS and the store
    score: float  # inner product = cosine similarity
    label: str | None  # class name, None when the stored image has no label
    path: str
    cell_id: str | None


@dataclass
class QueryResult:
    query: str  # the query image path (or "vector <i>")
    predicted: Prediction | None  # the encoder's own class; None without class scores
    knn_label: str | None  # majority class of the neighbours; ties go to the higher summed score
    neighbours: list[Neighbour]
    # The class from the proxies and the archive's labelled crops (model.predict.archive_call):
    # the call to act on. None without class scores.
    call: Prediction | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `query` command's JSON for one image (keys that scripts may rely on)."""
        return {
            "query": self.query,
            "call": asdict(self.call) if self.call is not None else None,
            "predicted": asdict(self.predicted) if self.predicted is not None else None,
            "knn_label": self.knn_label,
            "neighbours": [asdict(n) for n in self.neighbours],
        }


def knn_vote(labels: Sequence[int], scores: Sequence[float]) -> int | None:
    """Majority class among neighbours (label -1 ignored); a tie goes to the larger summed score
    (the argmax of `model.predict.neighbour_votes`, which the archive call mixes in)."""
    votes = neighbour_votes(
        np.asarray([labels]).reshape(1, -1), np.asarray([scores]).reshape(1, -1), len(CLASS_NAMES)
    )[0]
    return int(votes.argmax()) if votes.any() else None


# -- query ---------------------------------------------------------------------------------


class SearchIndex:
    """An index opened for queries.

    Images are embedded with the model that built the index: the checkpoint named in its card,
    or `model` (a path or an Encoder), whose fingerprint must match the card's.
    """

    def __init__(self, folder: IndexFolder, model: ModelLike | None = None, device: str = "cpu"):
        self.folder = folder
        self._encoder = None
        self._means: np.ndarray | None = None
        self._device = device
        if model is not None:
            self._set_encoder(model)

    @classmethod
    def open(
        cls,
        index_dir: PathLike = DEFAULT_INDEX_DIR,
        model: ModelLike | None = None,
        device: str = "cpu",
    ) -> SearchIndex:
        """The index at `index_dir`; a checkpoint (`model`, else the card's) loads on `device`."""
        return cls(read_index_folder(index_dir), model, device)

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def card(self) -> IndexCard:
        return self.folder.card

    @property
    def rows(self) -> Rows:
        """The stored metadata (embeddings not loaded)."""
        return self.folder.rows

    def _set_encoder(self, model: ModelLike) -> None:
        from ..model.checkpoint import resolve_encoder

        encoder, _ = resolve_encoder(model, pick_device(self._device))
        check_encoder(self.card, encoder, self.folder.path)
        self._encoder = encoder

    @property
    def encoder(self) -> Encoder | OnnxEncoder:
        """The encoder that built the index (loaded on first use from the card's model path):
        on ONNX Runtime where it serves (CPU, `model.onnx_encoder.onnx_encoder`), else torch."""
        if self._encoder is None:
            path = self.card.model_path
            if not path or not Path(path).is_file():
                raise UserError(
                    f"{self.folder.path}: the model that built this index ({path or 'unknown'}) is "
                    "not there; pass its checkpoint (--model)"
                )
            if self._device in ("auto", "cpu"):
                from ..model.onnx_encoder import onnx_encoder

                exported = onnx_encoder(self.card.model_fingerprint, path)
                if exported is not None:
                    check_encoder(self.card, exported, self.folder.path)
                    self._encoder = exported
                    return exported
            self._set_encoder(path)
        return self._encoder

    def query_images(
        self, paths: Sequence[PathLike], k: int = 8, batch_size: int = 64
    ) -> list[QueryResult]:
        """Embed image files and find their k nearest stored images.

        Raises ImageError (a UserError naming the file) for a file that cannot be read;
        `search_images` reports such files and answers for the rest.
        """
        results, errors = self.search_images(paths, k, batch_size)
        if errors:
            raise errors[0]
        return results

    def search_images(
        self, paths: Sequence[PathLike], k: int = 8, batch_size: int = 64
    ) -> tuple[list[QueryResult], list[ImageError]]:
        """`query_images` that goes on past unreadable files: the results of the files that
        read, in input order, and an ImageError (path and reason) for each of the others."""
        from ..model.embed import embed_files

        embedded = embed_files(self.encoder, list(paths), batch_size)
        if not embedded.paths:
            return [], list(embedded.errors)
        found = self.query_vectors(embedded.embeddings, k, embedded.scores, embedded.paths)
        return found, list(embedded.errors)

    @property
    def archive_setting(self) -> ArchiveSetting:
        """The setting this index chose for the archive call (`search.archive`), else the
        fixed one."""
        return ArchiveSetting.from_dict(self.card.archive)

    def class_means(self) -> np.ndarray:
        """The unit class means of the labelled archived vectors (classes, D), read once."""
        if self._means is None:
            from .archive import class_means

            self._means = class_means(self.folder)
        return self._means

    def archive_evidence(
        self, vectors: np.ndarray, queries: Sequence[str | None]
    ) -> ArchiveEvidence:
        """What the archive says about each vector (`model.predict.ArchiveEvidence`): the vote
        of its k nearest labelled archived crops (a query's own file, `queries`, never votes),
        its cosines to the class means, and the index's setting."""
        setting = self.archive_setting
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        found = self._hits(vectors, setting.k + 1)
        return self._evidence(vectors, found, queries, setting)

    def _evidence(
        self,
        vectors: np.ndarray,
        found: list,
        queries: Sequence[str | None],
        setting: ArchiveSetting,
    ) -> ArchiveEvidence:
        votes = self._votes(found, queries, len(CLASS_NAMES), setting.k)
        return ArchiveEvidence(votes, vectors @ self.class_means().T, setting)

    def _hits(self, vectors: np.ndarray, n: int) -> list[tuple[np.ndarray, ...]]:
        """Per vector, the (ids, similarities, store positions) of its n nearest rows."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        sims, ids = self.folder.search(vectors, min(n, max(len(self), 1)))
        found = []
        for row_sims, row_ids in zip(sims, ids, strict=True):
            valid = row_ids >= 0
            found.append((row_ids[valid], row_sims[valid], self.rows.positions(row_ids[valid])))
        return found

    def _votes(
        self, found: list, queries: Sequence[str | None], num_classes: int, k: int
    ) -> np.ndarray:
        # one more neighbour is fetched than votes: an archived query does not vote for itself
        labels = np.full((len(found), k), -1, np.int64)
        sims = np.zeros((len(found), k))
        rows = self.rows
        for q, ((_, row_sims, pos), name) in enumerate(zip(found, queries, strict=True)):
            own = file_identity(name) if name is not None else None
            voters = [j for j, p in enumerate(pos) if file_identity(rows.paths[p]) != own]
            voters = voters[:k]
            labels[q, : len(voters)] = rows.labels[pos[voters]]
            sims[q, : len(voters)] = row_sims[voters]
        return neighbour_votes(labels, sims, num_classes)

    def query_vectors(
        self,
        vectors: np.ndarray,
        k: int = 8,
        scores: np.ndarray | None = None,
        queries: Sequence[str] | None = None,
    ) -> list[QueryResult]:
        """Nearest stored images of unit vectors (n, D).

        `scores` (n, classes) are the encoder's class scores (Encoder.embed_and_score); without
        them `predicted` is None. `queries` names each row in the results.
        """
        if k < 1:
            raise UserError(f"k must be at least 1, not {k}")
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        setting = self.archive_setting
        found = self._hits(vectors, max(k, setting.k + 1))
        names = (
            list(queries) if queries is not None else [f"vector {i}" for i in range(len(vectors))]
        )
        rows = self.rows
        if scores is not None:
            predictions = predict(scores, self.card.arch)
            own = queries if queries is not None else [None] * len(vectors)
            evidence = self._evidence(vectors, found, own, setting)
            calls = archive_call(
                scores, evidence.votes, self.card.arch, setting, evidence.centroid_scores
            )
        else:
            predictions = calls = [None] * len(vectors)
        results = []
        for name, pred, call, (row_ids, row_sims, pos) in zip(
            names, predictions, calls, found, strict=True
        ):
            row_ids, row_sims, pos = row_ids[:k], row_sims[:k], pos[:k]
            neighbours = []
            for rank, (i, s, p) in enumerate(zip(row_ids, row_sims, pos, strict=True), start=1):
                label = int(rows.labels[p])
                neighbours.append(
                    Neighbour(
                        rank,
                        int(i),
                        float(s),
                        CLASS_NAMES[label] if label >= 0 else None,
                        rows.paths[p],
                        rows.cell_ids[p] or None,
                    )
                )
            vote = knn_vote([int(rows.labels[p]) for p in pos], row_sims.tolist())
            knn = CLASS_NAMES[vote] if vote is not None else None
            results.append(QueryResult(name, pred, knn, neighbours, call))
        return results


@dataclass
class QueryRun:
    """What `query` found: a result per image that read, and a reason per path that did not."""

    results: list[QueryResult]
    errors: list[dict[str, str]]  # {"path", "reason"}: missing, unreadable or not an image

    def to_dict(self) -> dict[str, Any]:
        """The `query` command's JSON: `results` (the contract) and `errors`."""
        return {"results": [r.to_dict() for r in self.results], "errors": self.errors}


def query(
    images: Sequence[PathLike],
    index_dir: PathLike = DEFAULT_INDEX_DIR,
    k: int = 8,
    model: ModelLike | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> QueryRun:
    """`karyosearch query`: the k nearest indexed images of image files, or of the image files
    under folders (`data.files.collect_paths`, walked as `index` walks them).

    A path that is missing, unreadable or no image is reported in `errors` and the others
    are answered; UserError when no path gives an image at all.
    """
    from ..data.files import collect_paths

    listing = collect_paths(images)
    errors = [{"path": str(p), "reason": reason} for p, reason in listing.skipped]
    if not listing.files:
        first = errors[0] if errors else {"path": "", "reason": "no image given"}
        more = f" ({len(errors) - 1} more paths failed too)" if len(errors) > 1 else ""
        raise UserError(f"{first['path']}: {first['reason']}{more}")
    search = SearchIndex.open(index_dir, model, device)
    results, failed = search.search_images(listing.files, k, batch_size)
    errors += [{"path": e.path, "reason": e.reason} for e in failed]
    if not results:
        first = errors[0]
        more = f" ({len(errors) - 1} more failed too)" if len(errors) > 1 else ""
        raise UserError(f"{first['path']}: {first['reason']}{more}")
    return QueryRun(results, errors)
