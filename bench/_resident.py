"""The CPU of commands run by sts-bridge's resident helper (``STS_BRIDGE_RESIDENT``).

The helper forks a worker per command: the worker is the helper's child, not
the launcher's, so ``wait4`` (``_measure.py``) sees only the small caller.
Linux adds a reaped child's CPU time to its parent's ``cutime``/``cstime``:
the worker's CPU is the growth of the helper's ``utime + stime + cutime +
cstime`` over the run, read once the helper has reaped the worker. Peak RSS
stays the caller's (a reaped child's peak is not visible from outside).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


class ResidentHelper:
    """The helpers serving one sts-bridge cache directory (found by their command line)."""

    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = cache_dir.encode()

    def pids(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"sts_bridge.cli.resident" in a for a in argv) and any(
                self.cache_dir in a for a in argv
            ):
                found.append(int(entry))
        return found

    def cpu(self) -> float:
        """CPU seconds of the helpers and of every worker they reaped, once none runs."""
        deadline = time.monotonic() + 10
        total = 0.0
        for pid in self.pids():
            children = Path(f"/proc/{pid}/task/{pid}/children")
            while children.exists() and children.read_text().strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)  # the helper reaps its workers within a second
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after the name: state is field 3, utime..cstime are fields 14-17
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGTERM)
