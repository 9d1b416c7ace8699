"""sts_bridge.aio.transfer_executor: worker threads at the nice value asked for (Linux),
the caller's own otherwise; the async operations run on them."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from sts_bridge.aio import run_cancellable, transfer_executor

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="each thread has its own nice value on Linux"
)


def _own_nice(_cancelled: object = None) -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_transfer_threads_run_at_the_nice_value_asked_for() -> None:
    mine = _own_nice()
    assert mine < 19, "the test process already runs at the lowest priority"
    executor = transfer_executor(2, nice=19)
    try:
        # what an AsyncWorkspace operation runs on: run_cancellable(executor, work)
        assert asyncio.run(run_cancellable(executor, _own_nice)) == 19
        assert executor.submit(_own_nice).result() == 19
    finally:
        executor.shutdown()
    assert _own_nice() == mine  # the caller's thread keeps its own


def test_without_a_nice_value_the_threads_keep_the_callers() -> None:
    executor = transfer_executor(2)
    try:
        assert executor.submit(_own_nice).result() == _own_nice()
    finally:
        executor.shutdown()


def test_a_negative_nice_value_is_refused() -> None:
    with pytest.raises(ValueError, match="privileges"):
        transfer_executor(2, nice=-5)
