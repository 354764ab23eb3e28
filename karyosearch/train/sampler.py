"""Class-balanced batches: each batch draws m images from each of c classes.

With 24 classes and X and Y far rarer than the autosomes (BioImLab: 238 per autosome, 193 X,
45 Y), uniform batches would rarely show Y; here every class is equally likely to be picked
for a batch, and a class with fewer than m images is sampled with replacement.

Joint training (`train --also`) marks the images of a second dataset as `extra`: each image
slot of a class is then filled from that class's extra images with probability `share`, and
an epoch grows by 1 / (1 - share) so that it still shows about every main image once (the
second dataset's images come on top of an epoch of before).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: `classes_per_batch` classes x `m` images each.

    An epoch is `len(labels) // (classes_per_batch * m)` batches; seeded and reproducible
    (`set_epoch` reseeds per epoch, as DistributedSampler does). `extra`: a boolean mask of a
    second dataset's images, drawn with probability `share` (< 1) per slot, the epoch then
    `main images / ((1 - share) * batch)` batches; without it the batches are exactly those
    of before.
    """

    def __init__(
        self,
        labels: Sequence[int],
        m: int = 4,
        classes_per_batch: int = 16,
        seed: int = 0,
        extra: Sequence[bool] | None = None,
        share: float = 0.0,
    ):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        if classes_per_batch > len(self.classes):
            classes_per_batch = len(self.classes)
        self.m = m
        self.classes_per_batch = classes_per_batch
        self.seed = seed
        self.epoch = 0
        is_extra = np.zeros(len(self.labels), bool) if extra is None else np.asarray(extra, bool)
        if is_extra.shape != self.labels.shape:
            raise ValueError("extra must mark each label")
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), not {share}")
        self.n_main = int((~is_extra).sum())
        self.share = share if is_extra.any() else 0.0
        # A class with no main image (or no extra one) always draws from the pool it has.
        of = {c: self.labels == c for c in self.classes}
        self.by_class = {c: np.flatnonzero(of[c] & ~is_extra) for c in self.classes}
        self.extra_by_class = {c: np.flatnonzero(of[c] & is_extra) for c in self.classes}
        for c in self.classes:
            if not len(self.by_class[c]):
                self.by_class[c], self.extra_by_class[c] = self.extra_by_class[c], self.by_class[c]

    @property
    def batch_size(self) -> int:
        return self.m * self.classes_per_batch

    def __len__(self) -> int:
        return max(1, int(self.n_main / ((1.0 - self.share) * self.batch_size)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        # Per class, a shuffled queue that refills when exhausted: every image is seen about
        # equally often within its class.
        queues = {c: list(rng.permutation(ix)) for c, ix in self.by_class.items()}
        extra = {c: list(rng.permutation(ix)) for c, ix in self.extra_by_class.items() if len(ix)}
        for _ in range(len(self)):
            batch: list[int] = []
            for c in rng.choice(self.classes, self.classes_per_batch, replace=False):
                for _ in range(self.m):
                    # no draw at all without extra images: the batches of before, bit for bit
                    if self.share and c in extra and rng.random() < self.share:
                        batch.append(self._pop(extra, c, self.extra_by_class[c], rng))
                    else:
                        batch.append(self._pop(queues, c, self.by_class[c], rng))
            yield batch

    @staticmethod
    def _pop(queues: dict, c: int, pool: np.ndarray, rng: np.random.Generator) -> int:
        if not queues[c]:
            queues[c] = list(rng.permutation(pool))
        return int(queues[c].pop())
