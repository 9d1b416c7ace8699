"""Start one measured command and report its wall time, CPU and peak RSS.

    python -I -S _launch.py RESULT_FILE CMD [ARG...]

Why a launcher: Linux records the hiwater RSS of the address space a process
leaves at ``exec`` into its ``ru_maxrss``. A command forked straight from the
harness (which has boto3 loaded, ~60 MB) would therefore report at least the
harness's RSS. This launcher is a bare interpreter (``-I -S``, about 8.5 MB),
so the floor it adds is below every contender's real footprint (``maxrss`` is
a maximum, not a sum). It spawns the command, reaps exactly that pid with
``os.wait4`` (the rusage of the command and of every descendant it waited
for), and writes ``wall cpu maxrss_kib status`` to RESULT_FILE.
"""

import os
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    while True:
        try:
            _, status, ru = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - t0
    with open(result, "w") as f:
        f.write(f"{wall!r} {ru.ru_utime + ru.ru_stime!r} {ru.ru_maxrss} {status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
