"""Where the event loop's thread waited: ``perf`` scheduler events, read back.

``record(pid, out)`` starts ``perf record -e sched:sched_switch -e
sched:sched_wakeup -g -a`` (with kernel and user stacks);
``loop_waits(script(out), loop_tid)`` turns it into the loop thread's
off-CPU intervals, longest first: how long it was blocked (switched out
asleep until something woke it) and queued (woken, or preempted, until it
got a core), the stack it slept in (``epoll_wait``: idle; a futex: a lock,
such as the GIL's mutex; a page fault: memory), which thread woke it, with
that thread's stack, and how long that thread itself waited for a core
meanwhile (a lock holder preempted holds the loop up as long).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEAD = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[\d+\]\s+(?P<time>[\d.]+):\s+(?P<event>\S+):"
)
_FIELD = re.compile(r"(\w+)=(\S+)")


def record(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """``perf record`` of the scheduler events while process ``pid`` runs (None
    without perf); system-wide, as the loop may be woken by the kernel on
    behalf of another process (a socket's data) and preempted by any."""
    del pid
    perf = shutil.which("perf")
    if perf is None:
        return None
    return subprocess.Popen(
        [
            perf,
            "record",
            "-q",
            "-e",
            "sched:sched_switch",
            "-e",
            "sched:sched_wakeup",
            "-g",
            "-a",  # a wake-up is recorded in the waker's context: any process
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class _Event:
    comm: str
    tid: int
    time: float
    name: str
    fields: dict[str, str]
    stack: list[str] = field(default_factory=list)


def _events(text: str) -> list[_Event]:
    events: list[_Event] = []
    for line in text.splitlines():
        head = _HEAD.match(line)
        if head:
            events.append(
                _Event(
                    head["comm"].strip(),
                    int(head["tid"]),
                    float(head["time"]),
                    head["event"].split(":")[-1],
                    dict(_FIELD.findall(line[head.end() :])),
                )
            )
        elif line.strip() and events:
            parts = line.split()
            if len(parts) >= 2:
                events[-1].stack.append(parts[1].split("+0x")[0])
    return events


def _frames(stack: list[str]) -> list[str]:
    """The named frames, innermost first, scheduler internals left out."""
    skip = ("__schedule", "schedule", "[unknown]", "__traceiter_", "ttwu_", "try_to_wake_up")
    return [f for f in stack if not f.startswith(skip)][:14]


def script(perf_data: Path) -> str:
    """``perf script`` of a recording: one line per event, its stack below it."""
    return subprocess.run(
        ["perf", "script", "-i", str(perf_data)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def loop_waits(text: str, loop_tid: int) -> list[dict[str, Any]]:
    """The loop thread's off-CPU intervals in ``perf script`` output, longest first."""
    waits: list[dict[str, Any]] = []
    out: _Event | None = None
    woken: _Event | None = None
    events = _events(text)
    preempted = _preempted_intervals(events)
    for ev in events:
        if ev.name == "sched_switch" and int(ev.fields.get("prev_pid", -1)) == loop_tid:
            out, woken = ev, None
        elif ev.name == "sched_wakeup" and int(ev.fields.get("pid", -1)) == loop_tid:
            if out is not None and woken is None:
                woken = ev
        elif ev.name == "sched_switch" and int(ev.fields.get("next_pid", -1)) == loop_tid:
            if out is None:
                continue
            state = out.fields.get("prev_state", "?")
            woke_at = woken.time if woken is not None else out.time
            waits.append(
                {
                    "off_cpu_ms": round((ev.time - out.time) * 1000, 2),
                    "blocked_ms": round((woke_at - out.time) * 1000, 2),
                    "queued_ms": round((ev.time - woke_at) * 1000, 2),
                    "state": state,
                    "slept_in": _frames(out.stack),
                    "woken_by": f"{woken.comm}/{woken.tid}" if woken is not None else None,
                    "waker_in": _frames(woken.stack) if woken is not None else [],
                    # how long the waker itself waited for a core while the loop was
                    # blocked (a GIL holder preempted holds the loop up as long)
                    "waker_queued_ms": round(
                        _overlap(preempted.get(woken.tid, []), out.time, woke_at) * 1000, 2
                    )
                    if woken is not None
                    else 0.0,
                    "at_s": round(out.time, 4),
                }
            )
            out = woken = None
    waits.sort(key=lambda w: w["off_cpu_ms"], reverse=True)
    return waits


def by_kind(waits: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Off-CPU time by what the thread slept in: ``preempted`` (runnable, off a
    core), ``futex`` (a lock: the GIL's mutex or condition variable),
    ``epoll_wait`` (idle, then maybe queued once woken): ``{kind: [count, ms, max ms]}``."""
    kinds: dict[str, list[float]] = {}
    for w in waits:
        kind = _kind(w["slept_in"], w["state"])
        entry = kinds.setdefault(kind, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] = round(entry[1] + w["off_cpu_ms"], 2)
        entry[2] = max(entry[2], w["off_cpu_ms"])
    return kinds


def _kind(frames: list[str], state: str) -> str:
    if state.startswith("R"):
        return "preempted"
    for name in ("epoll_wait", "handle_mm_fault", "rwsem", "futex"):
        for frame in frames:
            if name in frame:
                return name
    return frames[0] if frames else "?"


def _preempted_intervals(events: list[_Event]) -> dict[int, list[tuple[float, float]]]:
    """Per thread, the intervals it was runnable but off a core (switched out
    preempted, state R, until switched in again)."""
    since: dict[int, float] = {}
    intervals: dict[int, list[tuple[float, float]]] = {}
    for ev in events:
        if ev.name != "sched_switch":
            continue
        prev, nxt = int(ev.fields.get("prev_pid", -1)), int(ev.fields.get("next_pid", -1))
        if ev.fields.get("prev_state", "").startswith("R"):
            since[prev] = ev.time
        if nxt in since:
            intervals.setdefault(nxt, []).append((since.pop(nxt), ev.time))
    return intervals


def _overlap(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
