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
rows with the same int64 ids as in FAISS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from ..labels import CLASS_NAMES
from ..model.checkpoint import ModelLike, resolve_encoder
from ..model.predict import Prediction, predict
from ..util.runtime import pick_device
from .folder import DEFAULT_INDEX_DIR, IndexCard, IndexFolder, check_encoder, read_index_folder
from .store import Rows

if TYPE_CHECKING:
    from ..model.encoder import Encoder

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
    predicted: Prediction | None  # None when no class scores were available
    knn_label: str | None  # majority class of the neighbours; ties go to the higher summed score
    neighbours: list[Neighbour]

    def to_dict(self) -> dict[str, Any]:
        """The `query` command's JSON for one image (keys that scripts may rely on)."""
        return {
            "query": self.query,
            "predicted": asdict(self.predicted) if self.predicted is not None else None,
            "knn_label": self.knn_label,
            "neighbours": [asdict(n) for n in self.neighbours],
        }


def knn_vote(labels: Sequence[int], scores: Sequence[float]) -> int | None:
    """Majority class among neighbours (label -1 ignored); a tie goes to the larger summed score."""
    tally: dict[int, list[float]] = {}
    for label, score in zip(labels, scores, strict=True):
        if label >= 0:
            count_sum = tally.setdefault(int(label), [0, 0.0])
            count_sum[0] += 1
            count_sum[1] += float(score)
    if not tally:
        return None
    return max(tally, key=lambda c: (tally[c][0], tally[c][1]))


# -- query ---------------------------------------------------------------------------------


class SearchIndex:
    """An index opened for queries.

    Images are embedded with the model that built the index: the checkpoint named in its card,
    or `model` (a path or an Encoder), whose fingerprint must match the card's.
    """

    def __init__(self, folder: IndexFolder, model: ModelLike | None = None, device: str = "cpu"):
        self.folder = folder
        self._encoder = None
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
        encoder, _ = resolve_encoder(model, pick_device(self._device))
        check_encoder(self.card, encoder, self.folder.path)
        self._encoder = encoder

    @property
    def encoder(self) -> Encoder:
        """The encoder that built the index (loaded on first use from the card's model path)."""
        if self._encoder is None:
            path = self.card.model_path
            if not path or not Path(path).is_file():
                raise UserError(
                    f"{self.folder.path}: the model that built this index ({path or 'unknown'}) is "
                    "not there; pass its checkpoint (--model)"
                )
            self._set_encoder(path)
        return self._encoder

    def query_images(
        self, paths: Sequence[PathLike], k: int = 8, batch_size: int = 64
    ) -> list[QueryResult]:
        """Embed image files and find their k nearest stored images.

        Raises ImageError (a UserError naming the file) for a file that cannot be read.
        """
        from ..model.embed import embed_files

        embedded = embed_files(self.encoder, list(paths), batch_size)
        if embedded.errors:
            raise embedded.errors[0]
        return self.query_vectors(embedded.embeddings, k, embedded.scores, [str(p) for p in paths])

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
        sims, ids = self.folder.search(vectors, min(k, max(len(self), 1)))
        predictions = (
            predict(scores, self.card.arch) if scores is not None else [None] * len(vectors)
        )
        names = (
            list(queries) if queries is not None else [f"vector {i}" for i in range(len(vectors))]
        )
        rows = self.rows
        results = []
        for name, pred, row_sims, row_ids in zip(names, predictions, sims, ids, strict=True):
            valid = row_ids >= 0
            row_ids, row_sims = row_ids[valid], row_sims[valid]
            pos = rows.positions(row_ids)
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
            results.append(
                QueryResult(name, pred, CLASS_NAMES[vote] if vote is not None else None, neighbours)
            )
        return results


def query(
    images: Sequence[PathLike],
    index_dir: PathLike = DEFAULT_INDEX_DIR,
    k: int = 8,
    model: ModelLike | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> list[QueryResult]:
    """`karyosearch query`: the k nearest indexed images of image files, or of the image files
    under folders (`data.files.expand_paths`, walked as `index` walks them)."""
    from ..data.files import expand_paths

    paths = expand_paths(images)
    return SearchIndex.open(index_dir, model, device).query_images(paths, k, batch_size)
