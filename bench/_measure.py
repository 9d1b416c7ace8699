"""Measure one command from outside: wall time, client CPU and peak RSS.

Every contender runs as its own process, started by a tiny launcher
(``_launch.py``, a bare interpreter) that reaps exactly that pid with
``os.wait4``: the rusage of the command *and of every descendant it waited
for* (Linux folds a reaped grandchild's CPU time and max RSS into its
parent's, which ``wait4`` reports together with the child's own). So a
wrapper (``aws`` is a Python entry point) is charged for the workers it
starts, and two runs never mix because each wait is for one pid.

- wall: ``time.perf_counter`` in the launcher, from just before the spawn to
  the reap (the launcher's own start-up is not counted);
- cpu: ``ru_utime + ru_stime`` (user + system seconds, children included);
- rss: ``ru_maxrss`` (KiB on Linux) -> bytes; the peak of the largest single
  process of the tree, not a sum. The launcher puts a floor of about 8.5 MB
  under it (see ``_launch.py`` for why a launcher is needed at all).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LAUNCHER = str(Path(__file__).resolve().parent / "_launch.py")


@dataclass
class Sample:
    """One measured run of one command."""

    wall: float  # seconds
    cpu: float  # user + system seconds, children included
    rss: int  # peak resident set size, bytes
    rc: int  # exit status (negative: killed by that signal)
    stdout: str = ""
    stderr: str = ""
    requests: dict[str, int] | None = None  # API/IdP requests during the run (sts-bridge)
    load: float = 0.0  # 1-minute load average when the run started (busy machine = noise)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("stdout")
        d.pop("stderr")
        if d["requests"] is None:
            d.pop("requests")
        return d


class CommandFailed(RuntimeError):
    def __init__(self, cmd: Sequence[str], sample: Sample) -> None:
        tail = (sample.stderr or sample.stdout).strip()[-1500:]
        super().__init__(f"{' '.join(map(str, cmd))} exited with {sample.rc}: {tail}")
        self.sample = sample


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 900.0,
    check: bool = True,
) -> Sample:
    """Run ``cmd`` to completion and measure it (stdout/stderr go to temp files)."""
    load = os.getloadavg()[0]
    fd, result = tempfile.mkstemp(prefix="bench-run-")
    os.close(fd)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, result, *map(str, cmd)],
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # a timeout kills the whole tree
            )

            def kill() -> None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        fields = Path(result).read_text().split()
    finally:
        os.unlink(result)
    if len(fields) != 4 or proc.returncode != 0:
        sample = Sample(float("nan"), float("nan"), 0, proc.returncode or -998, stdout, stderr)
        sample.load = load
    else:
        sample = Sample(
            wall=float(fields[0]),
            cpu=float(fields[1]),
            rss=int(fields[2]) * 1024,
            rc=os.waitstatus_to_exitcode(int(fields[3])),
            stdout=stdout,
            stderr=stderr,
            load=load,
        )
    if check and sample.rc != 0:
        raise CommandFailed(cmd, sample)
    return sample
