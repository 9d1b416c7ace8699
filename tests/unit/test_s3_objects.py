"""Range bounds of single-request reads (fsspec's slice-like start/end), and
batches of calls on an object's threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fake_targets import NoRequestTarget

from sts_bridge.s3.objects import ObjectIO, empty_range, needs_size, range_header


@pytest.mark.parametrize(
    ("start", "end", "header"),
    [
        (None, None, None),
        (0, None, None),
        (None, 10, "bytes=0-9"),
        (5, 10, "bytes=5-9"),
        (5, None, "bytes=5-"),
        (-4, None, "bytes=-4"),
    ],
)
def test_range_header(start: int | None, end: int | None, header: str | None) -> None:
    assert range_header(start, end) == header


@pytest.mark.parametrize(("start", "end"), [(None, -1), (0, -3), (-4, 10), (-4, -1)])
def test_bounds_counted_from_the_end_need_the_size(start: int | None, end: int) -> None:
    assert needs_size(start, end)
    with pytest.raises(ValueError, match="needs the size"):
        range_header(start, end)


@pytest.mark.parametrize(
    ("start", "end", "empty"),
    [
        (0, 0, True),
        (5, 5, True),
        (7, 3, True),
        (None, 0, True),
        (0, 1, False),
        (None, None, False),
        (-4, None, False),
        (3, None, False),
    ],
)
def test_empty_range(start: int | None, end: int | None, empty: bool) -> None:
    assert empty_range(start, end) is empty


class _CountingPool:
    """The object's thread pool, counting the jobs handed to it."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool, self.jobs = pool, 0

    def submit(self, fn: Any, *args: Any) -> Any:
        self.jobs += 1
        return self.pool.submit(fn, *args)


def _objects(concurrency: int) -> tuple[ObjectIO, _CountingPool]:
    objects = ObjectIO(NoRequestTarget(), concurrency=concurrency)  # type: ignore[arg-type]
    counting = _CountingPool(objects._threads())
    objects._threads = lambda: counting  # type: ignore[assignment,method-assign,return-value]
    return objects, counting


def test_a_batch_runs_every_item_once_in_order_with_one_hand_off_per_thread() -> None:
    objects, pool = _objects(concurrency=4)
    seen: list[int] = []
    threads: set[str] = set()

    def double(i: int) -> int:
        seen.append(i)
        threads.add(threading.current_thread().name)
        return 2 * i

    try:
        assert asyncio.run(objects.run_each(double, [(i,) for i in range(50)])) == [
            2 * i for i in range(50)
        ]
        assert sorted(seen) == list(range(50))
        assert pool.jobs == 4 and len(threads) <= 4  # not one job per item
        assert asyncio.run(objects.run_each(double, [(1,), (2,)], limit=8)) == [2, 4]
        assert pool.jobs == 6  # never more threads than items
        assert asyncio.run(objects.run_each(double, [(i,) for i in range(9)], limit=1)) == [
            2 * i for i in range(9)
        ]
        assert pool.jobs == 7
        for unlimited in (-1, 0):  # fsspec's batch_size=-1: no limit of its own
            assert asyncio.run(objects.run_each(double, [(3,)] * 6, limit=unlimited)) == [6] * 6
        assert pool.jobs == 15
        assert asyncio.run(objects.run_each(double, [])) == []
    finally:
        objects.close()


def test_a_batch_keeps_each_items_error_in_its_place_or_stops_at_the_first() -> None:
    objects, _ = _objects(concurrency=1)
    ran: list[int] = []

    def odd_fails(i: int) -> int:
        ran.append(i)
        if i % 2:
            raise OSError(f"item {i}")
        return i

    try:
        got = asyncio.run(objects.run_each(odd_fails, [(i,) for i in range(4)]))
        assert [type(x) for x in got] == [int, OSError, int, OSError]
        assert str(got[3]) == "item 3"
        ran.clear()
        with pytest.raises(OSError, match="item 1"):
            asyncio.run(objects.run_each(odd_fails, [(i,) for i in range(4)], stop_at_error=True))
        assert ran == [0, 1]  # nothing started after the failure
    finally:
        objects.close()


def test_a_cancelled_batch_starts_no_further_item() -> None:
    objects, _ = _objects(concurrency=1)
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def held(i: int) -> None:
        ran.append(i)
        started.set()
        release.wait()

    async def cancel_while_the_first_runs() -> None:
        batch = asyncio.ensure_future(objects.run_each(held, [(i,) for i in range(5)]))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch

    try:
        asyncio.run(cancel_while_the_first_runs())
        release.set()
        # the thread finishes its item and takes no other: a later job runs next
        assert objects._threads().submit(lambda: list(ran)).result() == [0]
    finally:
        release.set()
        objects.close()
