"""Whether Ctrl-C or SIGTERM reached this process, asked where a stream is about to be stored.

``cat big | sts-bridge upload - --to k`` and Ctrl-C: the terminal signals
the whole pipeline, ``cat`` dies, and the upload reads an end of file that
is not the end of the data. Python runs a signal's handler in the main
thread only, at its next bytecode, so an upload that reads the stream in
another thread (or a main thread held in C code) can see that end of file
before any ``KeyboardInterrupt``, and would store a cut-off object.

:func:`watching` asks the interpreter's C-level handler to write the number
of every signal it catches to a pipe the moment the signal arrives, in
whichever thread (:func:`signal.set_wakeup_fd`); :func:`arrived` reads that
pipe without blocking. The stream upload asks it right before it completes
a multipart upload or sends the single PUT of a short stream, and aborts
instead when Ctrl-C or SIGTERM came. Outside :func:`watching` (a program
that uses the SDK and handles signals its own way) nothing is watched and
:func:`arrived` answers ``None``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["arrived", "watching"]

#: The signals that end a command (Ctrl-C, SIGTERM).
_STOPPING = frozenset({int(signal.SIGINT), int(signal.SIGTERM)})

_lock = threading.Lock()
_read_end: int | None = None
_seen: int | None = None


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Watch for Ctrl-C and SIGTERM while the block runs (main thread only:
    elsewhere, and when another wake-up descriptor is set, nothing is watched)."""
    global _read_end, _seen
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        previous: int | None = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None  # no wake-up descriptor can be set here
    if previous != -1:
        if previous is not None:  # an event loop's: leave it in place
            signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        yield
        return
    with _lock:
        _read_end, _seen = read_end, None
    try:
        yield
    finally:
        signal.set_wakeup_fd(-1)
        with _lock:
            _read_end, _seen = None, None
        os.close(read_end)
        os.close(write_end)


def arrived() -> int | None:
    """The number of the first Ctrl-C (SIGINT) or SIGTERM caught while
    :func:`watching`, or ``None``."""
    global _seen
    with _lock:
        if _read_end is None or _seen is not None:
            return _seen
        while True:
            try:
                data = os.read(_read_end, 512)
            except BlockingIOError:
                break
            if not data:
                break
            stopping = [n for n in data if n in _STOPPING]
            if stopping:
                _seen = stopping[0]
                break
        return _seen
