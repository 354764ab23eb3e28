"""The prefetching reader of `embed_files`: every item read once, batches in order, the next
batches read while the caller works on the current one."""

from __future__ import annotations

import threading

import pytest

from karyosearch.model.embed import read_ahead


@pytest.mark.parametrize("ahead", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_batches_in_order_each_item_once(ahead: int, batch_size: int) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def read(i: int) -> int:
        with lock:
            seen.append(i)
        return i * i

    items = list(range(20))
    got = list(read_ahead(read, items, batch_size, workers=3, ahead=ahead))
    assert [b for b, _ in got] == [items[i : i + batch_size] for i in range(0, 20, batch_size)]
    assert [r for _, rs in got for r in rs] == [i * i for i in items]
    assert sorted(seen) == items


def test_the_next_batch_is_read_while_the_caller_works() -> None:
    started = threading.Event()

    def read(i: int) -> int:
        if i == 2:  # the first item of the second batch
            started.set()
        return i

    batches = read_ahead(read, list(range(4)), 2, workers=2, ahead=1)
    next(batches)  # the caller holds batch 0 ...
    assert started.wait(5)  # ... while batch 1 is read
    assert [b for b, _ in batches] == [[2, 3]]


def test_nothing_to_read() -> None:
    assert list(read_ahead(lambda i: i, [], 4)) == []


def test_a_single_item_is_read_in_the_calling_thread() -> None:
    readers: list[threading.Thread] = []

    def read(i: int) -> int:
        readers.append(threading.current_thread())
        return i + 1

    assert list(read_ahead(read, [5], 4, workers=2, ahead=1)) == [([5], [6])]
    assert readers == [threading.current_thread()]
