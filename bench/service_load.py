"""Load on the reference service (examples/results_service.py) beside the local platform.

    .venv/bin/python bench/service_load.py                      # the full size (issue 22)
    .venv/bin/python bench/service_load.py --users 3 --requests 50 --uploads 20 \\
        --churn-users 200 --cache 20                            # a reduced run

Three phases, each against the service under uvicorn (one process):

1. ``--users`` users (logged in through the IdP's pages for the service's
   audience) send ``--requests`` requests each, all at once through 32
   client threads (4 of 5 ``POST /results`` of 1 KiB, 1 of 5 ``GET
   /results``): errors, p50/p99 latency, and the token exchanges (IdP
   ``POST /token``) and STS calls (reference API) the service made, which
   must be one per user;
2. ``--uploads`` concurrent ``POST /results`` of ``--upload-mib`` MiB: the
   event loop's largest lag while they are in flight (the service's own
   probe, ``RESULTS_LAG_PROBE``), errors, latency;
3. ``--churn-users`` distinct users, one ``GET /results`` each (8 at a time),
   through a service whose cache holds ``--cache`` users: its RSS after every
   tenth of them (flat once the cache is full).

Peak RSS is the service's ``VmHWM``. Writes ``bench/results/service.json``
and ``service.md`` (``--out`` changes the stem) and prints the table.

The loop's lag alone, this checkout against another one (``git archive main
| tar -x -C /tmp/base``), ``--rounds`` interleaved rounds of phase 2, each on
a freshly started service warmed by one request per user::

    .venv/bin/python bench/service_load.py --lag-only --rounds 5 --baseline /tmp/base

(``--baseline-env NAME=VALUE``: the baseline is this checkout with another
setting; ``--variant NAME:K=V,K=V`` (repeatable): named settings of this
checkout instead, interleaved; ``--perf``: where the loop thread waited, from the scheduler's
events, see ``_sched_trace.py``.)

writes ``bench/results/service_lag.json`` and prints, per variant, the largest
lag, the median sample and the p99 sample of every round. A probe sample is
how late a 5 ms sleep of the loop wakes; the service also says where the worst
one's time went (the loop thread on a CPU, in the run queue, or blocked,
which is the GIL).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _sched_trace
from sts_bridge_devstack.idp import User, default_users
from sts_bridge_devstack.platform import LocalPlatform
from sts_bridge_devstack.results_service import ResultsService

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def counts(platform: LocalPlatform) -> tuple[int, int]:
    return (
        int(platform.idp_stats()["by_path"].get("POST /token", 0)),
        int(platform.api_stats()["sts_exchanges"]),
    )


def timed(service: ResultsService, method: str, token: str, **kwargs: Any) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        status = int(service.call(method, "/results", token, **kwargs).status_code)
    except Exception:  # a refused connection counts as an error, not a crash
        status = 0
    return time.perf_counter() - started, status


def logins(platform: LocalPlatform, names: list[str], threads: int = 8) -> dict[str, str]:
    audience = platform.exchange_audience
    with ThreadPoolExecutor(threads) as pool:
        tokens = pool.map(lambda n: platform.user_token(n, resource=audience), names)
        return dict(zip(names, tokens, strict=True))


def load_phase(
    platform: LocalPlatform, service: ResultsService, tokens: dict[str, str], per_user: int
) -> dict[str, Any]:
    before = counts(platform)
    jobs = [(name, i) for i in range(per_user) for name in tokens]

    def one(job: tuple[str, int]) -> tuple[float, int]:
        name, i = job
        if i % 5 == 4:
            return timed(service, "GET", tokens[name])
        return timed(service, "POST", tokens[name], data=b"r" * 1024)

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - started
    after = counts(platform)
    latencies = [t for t, _ in results]
    return {
        "requests": len(results),
        "errors": sum(1 for _, s in results if s not in (200, 201)),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "exchanges": after[0] - before[0],
        "sts_calls": after[1] - before[1],
        "users": len(tokens),
    }


def thread_times(pid: int) -> dict[str, list[float]]:
    """CPU and run-queue milliseconds of a process's threads, summed by thread kind
    (the name without its number): ``{kind: [on_cpu_ms, queued_ms]}``."""
    kinds: dict[str, list[float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            on_cpu, queued = (task / "schedstat").read_text().split()[:2]
        except OSError:  # the thread ended meanwhile
            continue
        # Python does not name its threads for the kernel: the loop is the main thread.
        kind = "loop" if task.name == str(pid) else name.rstrip("0123456789_").strip() or name
        entry = kinds.setdefault(kind, [0.0, 0.0])
        entry[0] += int(on_cpu) / 1e6
        entry[1] += int(queued) / 1e6
    return kinds


def upload_phase(
    service: ResultsService, tokens: dict[str, str], uploads: int, size: int
) -> dict[str, Any]:
    body = os.urandom(size)
    names = list(tokens)
    # the loop's lag with nothing to do: what the machine alone adds
    service.call("POST", "/__lag/reset", None)
    time.sleep(2)
    idle = service.call("GET", "/__lag", None).json()
    service.call("POST", "/__lag/reset", None)
    start = threading.Barrier(uploads)

    def one(i: int) -> tuple[float, int]:
        start.wait()
        return timed(service, "POST", tokens[names[i % len(names)]], data=body)

    threads_before = thread_times(service.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(uploads) as pool:
        results = list(pool.map(one, range(uploads)))
    wall_ms = (time.perf_counter() - started) * 1000
    threads_after = thread_times(service.pid)
    lag = service.call("GET", "/__lag", None).json()
    latencies = [t for t, _ in results]
    return {
        "uploads": uploads,
        "mib_each": size // MiB,
        "errors": sum(1 for _, s in results if s != 201),
        "max_loop_lag_ms": round(lag["max_ms"], 1),
        "p50_loop_lag_ms": lag.get("p50_ms"),
        "p99_loop_lag_ms": lag.get("p99_ms"),
        "worst_lag_split": lag.get("worst"),
        "gc_collections": lag.get("gc"),
        "idle_loop_lag_ms": round(idle["max_ms"], 1),
        "wall_ms": round(wall_ms),
        # the service's threads during the phase: [on a CPU, waiting for one] (ms)
        "threads_ms": {
            kind: [round(after[i] - threads_before.get(kind, [0.0, 0.0])[i]) for i in (0, 1)]
            for kind, after in threads_after.items()
        },
        "lag_samples": lag["samples"],
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def churn_phase(
    platform: LocalPlatform, workdir: Path, tokens: dict[str, str], cache: int
) -> dict[str, Any]:
    with ResultsService(platform, workdir, RESULTS_MAX_USERS=str(cache)) as service:
        names = list(tokens)
        step = max(1, len(names) // 10)
        rss: list[int] = []
        errors = 0
        with ThreadPoolExecutor(8) as pool:
            for first in range(0, len(names), step):
                batch = names[first : first + step]
                statuses = list(pool.map(lambda n: timed(service, "GET", tokens[n])[1], batch))
                failed = [s for s in statuses if s != 200]
                errors += len(failed)
                if failed:
                    print(f"churn: statuses {sorted(set(failed))}", file=sys.stderr)
                rss.append(proc_status(service.pid, "VmRSS"))
        if errors:
            refusals = [ln for ln in service.read_log().splitlines() if "failed" in ln]
            print("\n".join(refusals[-5:]), file=sys.stderr)
        return {
            "users": len(names),
            "cache": cache,
            "errors": errors,
            "rss_mib_by_tenth": [round(r / MiB, 1) for r in rss],
            "peak_rss_mib": round(proc_status(service.pid, "VmHWM") / MiB, 1),
        }


def markdown(result: dict[str, Any]) -> str:
    load, up, churn = result["load"], result["uploads"], result["churn"]
    return "\n".join(
        [
            f"Service load ({result['when']}, {result['cpus']} CPUs, load average "
            f"{result['loadavg']}):",
            "",
            "| phase | what | result |",
            "|---|---|---|",
            f"| load | {load['users']} users x {load['requests'] // load['users']} requests "
            f"| {load['errors']} errors, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
            f"{load['requests_per_s']} req/s; {load['exchanges']} exchanges, "
            f"{load['sts_calls']} STS calls |",
            f"| uploads | {up['uploads']} x {up['mib_each']} MiB at once | {up['errors']} errors, "
            f"largest loop lag {up['max_loop_lag_ms']} ms (idle "
            f"{up['idle_loop_lag_ms']} ms), p50 {up['p50_ms']} ms, "
            f"p99 {up['p99_ms']} ms |",
            f"| peak RSS | after load and uploads | {result['peak_rss_mib']} MiB |",
            f"| churn | {churn['users']} users through a cache of {churn['cache']} "
            f"| {churn['errors']} errors, RSS by tenth (MiB) {churn['rss_mib_by_tenth']}, "
            f"peak {churn['peak_rss_mib']} MiB |",
            "",
        ]
    )


def lag_rounds(
    platform: LocalPlatform,
    workdir: Path,
    tokens: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Phase 2 alone, ``args.rounds`` times per variant, the variants alternating."""
    variants: dict[str, Path | None] = {"this": None}
    if args.baseline or args.baseline_env:
        variants = {"baseline": Path(args.baseline) if args.baseline else None, "this": None}
    # the service's environment per variant: --baseline-env only in the baseline's
    extra = {"baseline": dict(kv.split("=", 1) for kv in args.baseline_env), "this": {}}
    if args.variant:  # named settings of this checkout instead (a sweep, e.g. of RESULTS_THREADS)
        variants, extra = {}, {}
        for spec in args.variant:
            name, _, settings = spec.partition(":")
            variants[name] = None
            extra[name] = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    order = list(variants)
    for number in range(args.rounds):
        for name in order:
            with ResultsService(
                platform,
                workdir,
                tree=variants[name],
                **{"RESULTS_LAG_PROBE": "1", "RESULTS_THREADS": args.threads, **extra[name]},
            ) as service:
                for token in tokens.values():  # each user's exchange and STS call, before
                    service.call("POST", "/results", token, data=b"warm")
                spy = None
                if args.py_spy:  # what holds the GIL during the phase (py-spy --gil)
                    spy = subprocess.Popen(
                        [
                            args.py_spy,
                            "record",
                            "--pid",
                            str(service.pid),
                            "--gil",
                            "--threads",
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--output",
                            str(HERE / "results" / f"service_lag_{name}_{number}.gil.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                trace = workdir / f"service_lag_{name}_{number}.perf.data"
                perf = _sched_trace.record(service.pid, trace) if args.perf else None
                result = upload_phase(service, tokens, args.uploads, args.upload_mib * MiB)
                for tracer in (spy, perf):
                    if tracer is not None:
                        tracer.send_signal(signal.SIGINT)
                        tracer.wait()
                if perf is not None:  # where the loop thread waited, by kind, and the longest
                    waits = _sched_trace.loop_waits(_sched_trace.script(trace), service.pid)
                    result["loop_off_cpu"] = _sched_trace.by_kind(waits)
                    result["loop_longest_waits"] = waits[:5]
            result["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            empty_store(platform)
            rounds[name].append(result)
            print(f"round {number} {name}: {result}", file=sys.stderr)
        order.reverse()
    return rounds


def empty_store(platform: LocalPlatform) -> None:
    """Every object deleted and radosgw's garbage collected: a round stores
    ``--uploads`` x ``--upload-mib`` in memstore's RAM (4 GiB), and a full
    memstore stalls the next round's uploads."""
    admin = platform.s3.client("s3")  # the platform's admin keys
    for bucket in admin.list_buckets()["Buckets"]:
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                admin.delete_objects(Bucket=bucket["Name"], Delete={"Objects": keys})
    platform.s3.gc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="per user")
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--upload-mib", type=int, default=8)
    parser.add_argument("--churn-users", type=int, default=1000)
    parser.add_argument("--cache", type=int, default=100)
    parser.add_argument("--threads", default="", help="the service's RESULTS_THREADS")
    parser.add_argument("--out", default=str(HERE / "results" / "service"))
    parser.add_argument("--lag-only", action="store_true", help="phase 2 alone, in rounds")
    parser.add_argument("--rounds", type=int, default=3, help="with --lag-only")
    parser.add_argument("--baseline", default="", help="with --lag-only: a checkout to compare")
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --lag-only: the baseline is this checkout (or --baseline) with this "
        "setting of the service (e.g. RESULTS_TRANSFER_NICE=0); repeatable",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:K=V[,K=V]",
        help="with --lag-only: instead of this/baseline, these named settings of this "
        "checkout's service, interleaved (e.g. t8:RESULTS_THREADS=8,RESULTS_TRANSFER_NICE=0); "
        "repeatable",
    )
    parser.add_argument("--py-spy", default="", help="with --lag-only: py-spy's path (profiles)")
    parser.add_argument(
        "--perf", action="store_true", help="with --lag-only: where the loop waited (perf sched)"
    )
    args = parser.parse_args(argv)
    if args.lag_only:
        return lag_main(args)

    load_names = [u.username for u in default_users()]
    extra = [f"user{i:02d}" for i in range(max(0, args.users - len(load_names)))]
    churn_names = [f"churn{i:04d}" for i in range(args.churn_users)]
    users = default_users() + [
        User(name, f"{name}-password", groups=["team-a"]) for name in extra + churn_names
    ]
    load_names = (load_names + extra)[: args.users]

    with tempfile.TemporaryDirectory(prefix="sts-bridge-service-bench-") as tmp:
        workdir = Path(tmp)
        with LocalPlatform(users=users, workdir=workdir) as platform:
            print(f"platform up in {platform.start_seconds:.1f} s", file=sys.stderr)
            tokens = logins(platform, load_names)
            with ResultsService(
                platform, workdir, RESULTS_LAG_PROBE="1", RESULTS_THREADS=args.threads
            ) as service:
                load = load_phase(platform, service, tokens, args.requests)
                print(f"load: {load}", file=sys.stderr)
                uploads = upload_phase(service, tokens, args.uploads, args.upload_mib * MiB)
                print(f"uploads: {uploads}", file=sys.stderr)
                peak = proc_status(service.pid, "VmHWM")
            started = time.perf_counter()
            churn_tokens = logins(platform, churn_names)
            print(
                f"{len(churn_tokens)} logins in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            churn = churn_phase(platform, workdir, churn_tokens, args.cache)
            print(f"churn: {churn}", file=sys.stderr)

    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "args": vars(args),
        "load": load,
        "uploads": uploads,
        "peak_rss_mib": round(peak / MiB, 1),
        "churn": churn,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    ok = load["errors"] == 0 and uploads["errors"] == 0 and churn["errors"] == 0
    return 0 if ok else 1


def lag_main(args: argparse.Namespace) -> int:
    names = [u.username for u in default_users()][: args.users]
    with tempfile.TemporaryDirectory(prefix="sts-bridge-service-bench-") as tmp:
        workdir = Path(tmp)
        with LocalPlatform(workdir=workdir) as platform:
            tokens = logins(platform, names)
            rounds = lag_rounds(platform, workdir, tokens, args)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "args": vars(args),
        "rounds": rounds,
    }
    out = HERE / "results" / "service_lag.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, runs in rounds.items():
        print(
            f"{name:9} max lag ms {[r['max_loop_lag_ms'] for r in runs]}  "
            f"p50 {[r['p50_loop_lag_ms'] for r in runs]}  "
            f"p99 {[r['p99_loop_lag_ms'] for r in runs]}  "
            f"errors {sum(r['errors'] for r in runs)}  "
            f"upload p50 ms {[r['p50_ms'] for r in runs]}"
        )
    return 0 if all(r["errors"] == 0 for runs in rounds.values() for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
