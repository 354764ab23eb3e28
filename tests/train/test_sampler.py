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


def test_extra_images_fill_their_share_of_slots_on_top_of_an_epoch_of_main_images():
    labels = [i % 4 for i in range(320)] + [i % 4 for i in range(2000)]  # 320 main, 2000 extra
    extra = [False] * 320 + [True] * 2000
    for share, batches_per_epoch in ((0.0, 40), (0.5, 80), (0.75, 160)):
        sampler = ClassBalancedBatchSampler(labels, 2, 4, seed=3, extra=extra, share=share)
        batches = list(sampler)
        assert len(batches) == batches_per_epoch  # about every main image once, whatever extra
        drawn = [i for batch in batches for i in batch]
        assert abs(sum(extra[i] for i in drawn) / len(drawn) - share) < 0.05
        main = [i for i in drawn if not extra[i]]
        assert abs(len(main) - 320) < 40 and len(set(main)) > 0.8 * 320
        for batch in batches:
            assert set(Counter(labels[i] for i in batch).values()) == {2}


def test_no_extra_images_gives_the_batches_of_before():
    labels = [i % 6 for i in range(120)]
    plain = ClassBalancedBatchSampler(labels, m=2, classes_per_batch=4, seed=5)
    marked = ClassBalancedBatchSampler(
        labels, m=2, classes_per_batch=4, seed=5, extra=[False] * 120, share=0.5
    )
    assert list(plain) == list(marked)


def test_a_class_only_the_extra_images_have_is_still_drawn():
    labels = [0] * 20 + [1] * 20 + [2] * 20
    extra = [False] * 40 + [True] * 20  # class 2 exists only in the second dataset
    sampler = ClassBalancedBatchSampler(labels, 2, 3, seed=0, extra=extra, share=0.1)
    drawn = [i for batch in sampler for i in batch]
    assert any(labels[i] == 2 for i in drawn) and len(sampler) == int(40 / (0.9 * 6))
