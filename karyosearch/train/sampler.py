"""Class-balanced batches: each batch draws m images from each of c classes.

With 24 classes and X and Y far rarer than the autosomes (BioImLab: 238 per autosome, 193 X,
45 Y), uniform batches would rarely show Y; here every class is equally likely to be picked
for a batch, and a class with fewer than m images is sampled with replacement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: `classes_per_batch` classes x `m` images each.

    An epoch is `len(labels) // (classes_per_batch * m)` batches; seeded and reproducible
    (`set_epoch` reseeds per epoch, as DistributedSampler does).
    """

    def __init__(
        self, labels: Sequence[int], m: int = 4, classes_per_batch: int = 16, seed: int = 0
    ):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        if classes_per_batch > len(self.classes):
            classes_per_batch = len(self.classes)
        self.m = m
        self.classes_per_batch = classes_per_batch
        self.seed = seed
        self.epoch = 0
        self.by_class = {c: np.flatnonzero(self.labels == c) for c in self.classes}

    @property
    def batch_size(self) -> int:
        return self.m * self.classes_per_batch

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        # Per class, a shuffled queue that refills when exhausted: every image is seen about
        # equally often within its class.
        queues = {c: list(rng.permutation(ix)) for c, ix in self.by_class.items()}
        for _ in range(len(self)):
            batch: list[int] = []
            for c in rng.choice(self.classes, self.classes_per_batch, replace=False):
                pool = self.by_class[c]
                for _ in range(self.m):
                    if not queues[c]:
                        queues[c] = list(rng.permutation(pool))
                    batch.append(int(queues[c].pop()))
            yield batch
