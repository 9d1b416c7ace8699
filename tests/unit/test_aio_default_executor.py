"""The executor async objects share by default is small: at most 4 threads per
CPU (at most 32), however many transfers are awaited at once.

Why it is pinned: more runnable transfer threads than that leave the event
loop waiting for a core; with 64 (the old default) 50 concurrent uploads of
8 MiB held a service's loop up for 215-498 ms on 2 cores, with 8 for 64-85 ms
(bench/service_load.py, docs/services.md). A fake workspace stands in for the
store: each upload waits until the test releases it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from sts_bridge.aio import AsyncWorkspace

BOUND = min(32, 4 * (os.cpu_count() or 1))
AWAITED = 100  # more than the old default's 64 threads


class HeldUploads:
    """A workspace whose uploads wait for ``release``, counting how many run at once."""

    def __init__(self, announce_at: int) -> None:
        self.release = threading.Event()
        self.reached = threading.Event()  # ``announce_at`` uploads run at once
        self._announce_at = announce_at
        self._lock = threading.Lock()
        self._running = 0
        self.most_at_once = 0
        self.done = 0

    def upload(self, source: Any, key: Any, **_options: Any) -> str:
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
            if self._running >= self._announce_at:
                self.reached.set()
        self.release.wait()
        with self._lock:
            self._running -= 1
            self.done += 1
        return str(key)


def _default_executor_threads() -> int:
    # the shared executor's threads carry the default name prefix; other
    # executors made with transfer_executor() in this process are shut down
    return sum(t.name.startswith("sts-bridge-aio") for t in threading.enumerate())


def test_the_default_executor_runs_at_most_4_threads_per_cpu() -> None:
    store = HeldUploads(announce_at=BOUND)
    aws = AsyncWorkspace(store)  # type: ignore[arg-type]  # the fake stands in for Workspace

    async def main() -> int:
        uploads = [asyncio.ensure_future(aws.upload(b"x", f"k{i}")) for i in range(AWAITED)]
        # every upload has been handed to the executor (each task ran up to its
        # first await) once BOUND of them run; the executor starts its threads
        # as they are handed over, so their count is final here
        await asyncio.get_running_loop().run_in_executor(None, store.reached.wait)
        threads = _default_executor_threads()
        store.release.set()
        await asyncio.gather(*uploads)
        return threads

    threads = asyncio.run(main())
    assert threads == BOUND, f"{threads} transfer threads for {AWAITED} awaited uploads"
    assert store.most_at_once == BOUND
    assert store.done == AWAITED
