"""The prefetching thread of `loader_workers: 0` (trainables/train/input_pipeline.py): order, errors, early stops."""
from __future__ import annotations

import threading
import time

import pytest

from trainables.train.input_pipeline import Prefetched


def _threads() -> int:
    return sum(thread.name == "kd-study-prefetch" for thread in threading.enumerate())


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_items_come_in_order_then_stop_for_good():
    items = Prefetched(iter(range(100)), depth=2)
    assert list(items) == list(range(100))
    with pytest.raises(StopIteration):
        next(items)


def test_the_sources_error_is_raised_where_its_item_would_be():
    def source():
        yield 1
        yield 2
        raise ValueError("row 3 unreadable")

    items = Prefetched(source(), depth=2)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="row 3 unreadable"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_it_keeps_at_most_depth_items_ahead():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    items = Prefetched(source(), depth=2)
    assert next(items) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 2 + 1     # the one taken, `depth` queued, one waiting to be put
    items.close()
    assert _wait_for(lambda: _threads() == 0)


def test_a_consumer_that_stops_early_lets_the_thread_go():
    assert _wait_for(lambda: _threads() == 0)  # the earlier tests' threads have ended
    items = Prefetched(iter(range(10**9)), depth=2)
    next(items)
    assert _threads() == 1
    del items                                  # a failed step drops the iterator
    assert _wait_for(lambda: _threads() == 0)
