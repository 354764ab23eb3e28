"""Class-balanced batches: m images from each of several classes, seeded."""

from __future__ import annotations

from collections import Counter

from karyosearch.train.sampler import ClassBalancedBatchSampler


def test_each_batch_has_m_images_of_each_chosen_class():
    labels = [0] * 40 + [1] * 40 + [2] * 5 + [3] * 30  # class 2 rarer than m * batches
    sampler = ClassBalancedBatchSampler(labels, m=4, classes_per_batch=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(labels) // 12
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}


def test_rare_classes_are_drawn_as_often_as_common_ones():
    labels = [0] * 200 + [1] * 200 + [2] * 10
    sampler = ClassBalancedBatchSampler(labels, m=2, classes_per_batch=2, seed=1)
    drawn = Counter(
        labels[i]
        for epoch in range(5)
        for batch in (sampler.set_epoch(epoch) or sampler)
        for i in batch
    )
    assert min(drawn.values()) > 0.6 * max(drawn.values())


def test_same_seed_same_batches_and_epochs_differ():
    labels = [i % 6 for i in range(120)]
    a = ClassBalancedBatchSampler(labels, m=2, classes_per_batch=4, seed=7)
    b = ClassBalancedBatchSampler(labels, m=2, classes_per_batch=4, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
