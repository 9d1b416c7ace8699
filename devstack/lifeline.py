"""Servers that end with the process that started them, however it ends.

A test run killed with SIGKILL, or ended by pytest-timeout's ``os._exit``,
runs no finalizer: without this module the identity provider, the API, moto
and the Ceph daemons it started would keep running. :func:`popen` starts
every server of the devstack in a session of its own (a terminal's Ctrl-C
reaches the starter, which stops them in order) and hands its process group
to one watchdog process per starter. The watchdog reads a pipe whose only
write end the starter holds; when the starter exits, the kernel closes that
end, the watchdog reads end-of-file and ends every group still there
(SIGTERM, then SIGKILL for what is left after a grace period); folders made
with :func:`mkdtemp` go after them.

``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that forked
exits (the identity provider starts from a short-lived thread) and reaches
only the direct child, not what the child forks.

A platform started with ``up --detach`` lives on: its starter is the
background ``up`` process, not the shell that asked for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["mkdtemp", "popen"]

#: How long the watchdog lets the groups end on SIGTERM before SIGKILL.
GRACE_SECONDS = 5.0

_lock = threading.Lock()
#: The watchdog of this process: (it, the pipe's write end, the pid that started it).
_watchdog: tuple[subprocess.Popen[bytes], IO[bytes], int] | None = None


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **kwargs)`` in a new session, its process
    group ended by the watchdog when this process ends without stopping it."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        _tell(f"group {proc.pid} {_start_time(proc.pid)}\n")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc


def mkdtemp(prefix: str, parent: Path | None = None) -> Path:
    """``tempfile.mkdtemp``, the folder removed by the watchdog (once the
    servers have ended) when this process ends without removing it: it holds
    the servers' signing keys and client secrets."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    _tell(f"folder {path}\n")
    return path


def _tell(line: str) -> None:
    """Send one line to this process's watchdog (started on first use; a
    forked child starts its own, so that its servers end with it)."""
    global _watchdog
    with _lock:
        if _watchdog is None or _watchdog[2] != os.getpid():
            if _watchdog is not None:  # the parent's: its end of the pipe is the parent's
                _watchdog[1].close()
            read, write = os.pipe()  # neither end is inherited by exec'd children
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "sts_bridge_devstack.lifeline"],
                    stdin=read,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,  # not ended by the terminal's Ctrl-C
                )
            finally:
                os.close(read)
            _watchdog = (proc, os.fdopen(write, "wb", buffering=0), os.getpid())
        _watchdog[1].write(line.encode())


def _start_time(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot): tells a process from a
    later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "-"
    # the command name (field 2) may hold spaces: count from its closing ")"
    return stat.rsplit(b")", 1)[1].split()[19].decode()


def _ours(pgid: int, started: str) -> bool:
    """Whether group ``pgid`` is still the one registered: it has a member,
    and its leader is gone (no new process can take a pid that names a live
    group) or is the same process."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    now = _start_time(pgid)
    return now == "-" or now == started


def _end(groups: dict[int, str]) -> None:
    """SIGTERM to every group still ours, then SIGKILL to what remains after
    ``GRACE_SECONDS``; each time the groups are polled until they are gone
    (most servers end within milliseconds), so their folders are removed
    once nothing writes into them."""
    alive = {g: s for g, s in groups.items() if _ours(g, s)}
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pgid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signum)
        deadline = time.monotonic() + GRACE_SECONDS
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = {g: s for g, s in alive.items() if _ours(g, s)}


def watch(stream: IO[bytes]) -> None:
    """The watchdog: collect ``group PGID START`` and ``folder PATH`` lines
    until end-of-file, then end the groups and remove the folders."""
    groups: dict[int, str] = {}
    folders: list[str] = []
    for line in stream:
        kind, _, what = line.decode().rstrip("\n").partition(" ")
        if kind == "group":
            pgid, started = what.split()
            groups[int(pgid)] = started
        else:
            folders.append(what)
    _end(groups)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    # The terminal's signals are for the starter; the watchdog ends with its pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch(sys.stdin.buffer)
