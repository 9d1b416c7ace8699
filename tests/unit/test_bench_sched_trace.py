# ruff: noqa: E501  (perf script lines are as long as perf writes them)
"""bench/_sched_trace.py reads ``perf script`` scheduler events into the loop thread's waits.

The recording below is shaped like the one that found the loop blocked on
the GIL's mutex while the thread holding it waited for a core: the loop
(tid 1000) sleeps in a futex at 10.000, the worker holding the lock (2000)
is preempted at 10.001 and gets a core back at 10.080, wakes the loop at
10.081, which runs at 10.082; then the loop is preempted for 3 ms and sleeps
in epoll_wait for 5 ms, woken by the kernel's timer, queued 2 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import _sched_trace

TRACE = """\
python  1000 [000]    10.000000: sched:sched_switch: prev_comm=python prev_pid=1000 prev_prio=120 prev_state=S ==> next_comm=python next_pid=2000 next_prio=130
\tffffffff82249848 __schedule+0x628 ([kernel.kallsyms])
\tffffffff82251510 futex_wait+0x100 ([kernel.kallsyms])
\t           a2b3c __GI___lll_lock_wait+0x1c (/usr/lib/x86_64-linux-gnu/libc.so.6)

python  2000 [000]    10.001000: sched:sched_switch: prev_comm=python prev_pid=2000 prev_prio=130 prev_state=R ==> next_comm=radosgw next_pid=3000 next_prio=120
\tffffffff82249848 __schedule+0x628 ([kernel.kallsyms])

radosgw  3000 [000]    10.080000: sched:sched_switch: prev_comm=radosgw prev_pid=3000 prev_prio=120 prev_state=S ==> next_comm=python next_pid=2000 next_prio=130
\tffffffff82249848 __schedule+0x628 ([kernel.kallsyms])

python  2000 [000]    10.081000: sched:sched_wakeup: comm=python pid=1000 prio=120 target_cpu=001
\tffffffff813b4dc5 ttwu_do_activate+0x175 ([kernel.kallsyms])
\t           b2c3d __GI___lll_lock_wake+0x1c (/usr/lib/x86_64-linux-gnu/libc.so.6)

swapper     0 [001]    10.082000: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=python next_pid=1000 next_prio=120

python  1000 [001]    10.090000: sched:sched_switch: prev_comm=python prev_pid=1000 prev_prio=120 prev_state=R ==> next_comm=radosgw next_pid=3001 next_prio=120
\tffffffff82249848 __schedule+0x628 ([kernel.kallsyms])

radosgw  3001 [001]    10.093000: sched:sched_switch: prev_comm=radosgw prev_pid=3001 prev_prio=120 prev_state=S ==> next_comm=python next_pid=1000 next_prio=120

python  1000 [001]    10.100000: sched:sched_switch: prev_comm=python prev_pid=1000 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
\tffffffff82249848 __schedule+0x628 ([kernel.kallsyms])
\tffffffff8150a111 do_epoll_wait+0x4a1 ([kernel.kallsyms])
\t           f1e2d epoll_pwait+0x55 (/usr/lib/x86_64-linux-gnu/libc.so.6)

swapper     0 [001]    10.105000: sched:sched_wakeup: comm=python pid=1000 prio=120 target_cpu=001
\tffffffff8142de4e hrtimer_wakeup+0x1e ([kernel.kallsyms])

radosgw  3001 [001]    10.107000: sched:sched_switch: prev_comm=radosgw prev_pid=3001 prev_prio=120 prev_state=S ==> next_comm=python next_pid=1000 next_prio=120
"""


def test_the_loops_waits_are_split_and_the_lock_holders_wait_is_named() -> None:
    waits = _sched_trace.loop_waits(TRACE, 1000)
    assert [w["off_cpu_ms"] for w in waits] == [82.0, 7.0, 3.0]
    lock = waits[0]
    assert (lock["blocked_ms"], lock["queued_ms"], lock["state"]) == (81.0, 1.0, "S")
    assert lock["slept_in"] == ["futex_wait", "__GI___lll_lock_wait"]
    assert lock["woken_by"] == "python/2000"
    assert lock["waker_in"] == ["__GI___lll_lock_wake"]
    assert lock["waker_queued_ms"] == 79.0  # preempted 10.001 to 10.080
    idle = waits[1]
    assert (idle["blocked_ms"], idle["queued_ms"], idle["woken_by"]) == (5.0, 2.0, "swapper/0")
    preempted = waits[2]
    assert (preempted["state"], preempted["blocked_ms"], preempted["queued_ms"]) == ("R", 0.0, 3.0)


def test_waits_are_summed_by_what_the_loop_slept_in() -> None:
    kinds = _sched_trace.by_kind(_sched_trace.loop_waits(TRACE, 1000))
    assert kinds == {
        "futex": [1, 82.0, 82.0],
        "epoll_wait": [1, 7.0, 7.0],
        "preempted": [1, 3.0, 3.0],
    }
