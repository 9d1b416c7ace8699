"""sts_bridge.interrupts: a signal is seen the moment it arrives, only while watched."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sts_bridge import interrupts


def test_ctrl_c_is_seen_while_watched_and_forgotten_after() -> None:
    assert interrupts.arrived() is None
    with interrupts.watching():
        assert interrupts.arrived() is None
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.arrived() == signal.SIGINT
        assert interrupts.arrived() == signal.SIGINT  # it stays seen
    assert interrupts.arrived() is None
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up descriptor was put back


def test_a_signal_taken_by_another_thread_is_seen_before_its_handler_runs() -> None:
    """The handler of a signal runs in the main thread only; the C-level
    wake-up write happens in the thread that took it."""
    seen: list[int | None] = []

    def taker() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # taken here
        seen.append(interrupts.arrived())

    with interrupts.watching():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        thread = threading.Thread(target=taker)  # SIGINT blocked: unblocked by itself
        try:
            # the handler runs in the main thread once it runs Python again
            with pytest.raises(KeyboardInterrupt):
                thread.start()
                thread.join()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            thread.join()
    assert seen == [signal.SIGINT]


def test_other_signals_are_not_watched() -> None:
    with interrupts.watching():
        previous = signal.signal(signal.SIGUSR1, lambda *_: None)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert interrupts.arrived() is None  # not a signal that stops a command
        finally:
            signal.signal(signal.SIGUSR1, previous)


def test_an_event_loops_wake_up_descriptor_is_left_in_place() -> None:
    """Another wake-up descriptor (an event loop's) stays set: nothing is watched."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK)
    assert signal.set_wakeup_fd(write_end) == -1
    try:
        with interrupts.watching():
            assert signal.set_wakeup_fd(write_end) == write_end  # still the loop's
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
            assert interrupts.arrived() is None
        assert signal.set_wakeup_fd(write_end) == write_end
        assert os.read(read_end, 16) == bytes([signal.SIGINT])  # the loop's pipe got it
    finally:
        signal.set_wakeup_fd(-1)
        os.close(read_end)
        os.close(write_end)
