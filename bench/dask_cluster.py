"""Dask workers writing to a workspace: shared credentials against static keys.

    .venv/bin/python bench/dask_cluster.py            # 64 MiB per task, 1/2/4 workers, 3 rounds
    .venv/bin/python bench/dask_cluster.py --quick    # 4 MiB per task, 1 round (a smoke run)

For each number of worker processes (a LocalCluster, one thread per worker,
started with no TERRAPI_* in its environment) every round runs the same
tasks twice, in alternating order:

* ``shared``: ``sts_bridge.dask.share(ws, client)`` is active; the workers
  resolve ``workspace://`` through the source it registered (snapshots pushed
  by the client, refreshed in the advisory window: the platform issues
  ``--sts-duration`` s credentials so that refreshes happen during the run);
* ``static``: the same filesystem class over one fixed snapshot per worker
  (the "copy the keys to the workers" pattern, with keys fresh enough to
  outlive the round).

Each worker makes one filesystem per round and mode (``use_filesystem_of``)
before the clock starts, so both modes pay the same set-up outside the
measurement and differ only in where the credentials come from.

Each task writes one object of ``--size-mib`` MiB (random bytes made once per
worker) with ``fsspec.filesystem("workspace").pipe_file``. A round counts
only when every object has the expected size. Aggregate throughput is the
bytes of all tasks over the wall time from submit to the last result.
Results: ``bench/results/dask_cluster.{md,json}`` (``dask_cluster_quick.*``
for ``--quick``). radosgw runs on this machine and shares its cores with the
workers: the point where adding workers stops helping is where this machine
saturates, not where radosgw would on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVICE_WORKSPACE = "gep-processing-results-a2s-service-workspace"
MIB = 1 << 20


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------- on the workers


# ------------------------------------------------------------ the harness


@dataclass
class Run:
    workers: int
    mode: str
    tasks: int
    size: int
    seconds: float
    task_seconds: list[float] = field(default_factory=list)

    @property
    def mib_per_s(self) -> float:
        return self.tasks * self.size / MIB / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "mode": self.mode,
            "tasks": self.tasks,
            "size": self.size,
            "seconds": round(self.seconds, 4),
            "mib_per_s": round(self.mib_per_s, 1),
            "task_seconds": [round(s, 4) for s in self.task_seconds],
        }


def _check_and_delete(ws: Any, base_key: str, expected: int, size: int) -> bool:
    s3 = ws.s3_client()
    found = s3.list_objects_v2(Bucket=ws.bucket, Prefix=f"{ws.prefix}{base_key}/")
    objects = found.get("Contents", [])
    good = len(objects) == expected and all(o["Size"] == size for o in objects)
    for item in objects:
        s3.delete_object(Bucket=ws.bucket, Key=item["Key"])
    return good


def _round(client: Any, ws: Any, workers: int, mode: str, tasks: int, size: int) -> Run | None:
    from sts_bridge_devstack.dask_tasks import write_buffer

    base_key = f"bench-dask-{mode}-{uuid.uuid4().hex}"
    base = f"workspace://{ws.name}/{base_key}"
    keys = [f"t{i}" for i in range(tasks)]
    started = time.perf_counter()
    futures = client.map(write_buffer, [base] * tasks, keys, pure=False)
    results = client.gather(futures)
    seconds = time.perf_counter() - started
    if not _check_and_delete(ws, base_key, tasks, size):
        _say(f"bench: {mode} with {workers} workers wrote wrong objects; round not counted")
        return None
    return Run(workers, mode, tasks, size, seconds, [s for _, s in results])


def bench(args: argparse.Namespace) -> dict[str, Any]:
    import distributed
    from sts_bridge_devstack.dask_tasks import make_buffer, use_filesystem_of
    from sts_bridge_devstack.platform import LocalPlatform

    from sts_bridge import Client
    from sts_bridge.dask import WorkspaceGrant, share

    size = args.size_mib * MIB
    runs: list[Run] = []
    pushes: dict[int, int] = {}
    share_seconds: dict[int, float] = {}
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    _say(f"bench: starting the local platform (STS credentials of {args.sts_duration} s)")
    with LocalPlatform(sts_duration=args.sts_duration) as plat:
        env = plat.env()
        for name, value in env.items():
            os.environ[name] = value
        os.environ["STS_BRIDGE_CACHE_DIR"] = str(tmp / "cache")
        ws = Client.from_env().workspace(SERVICE_WORKSPACE)
        ws.credentials()
        # the workers are "other hosts": they inherit none of the user's configuration
        for name in list(os.environ):
            if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
                del os.environ[name]
        for workers in args.workers:
            _say(f"bench: {workers} worker process(es)")
            with (
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    host="127.0.0.1",
                    local_directory=str(tmp / "dask"),
                ) as cluster,
                distributed.Client(cluster, set_as_default=False) as client,
            ):
                client.run(make_buffer, size)
                started = time.perf_counter()
                handle = share(ws, client)
                share_seconds[workers] = time.perf_counter() - started
                tasks = workers * args.tasks_per_worker
                try:
                    # one warm-up of each mode, not counted
                    order = ["shared", "static"]
                    for rnd in range(args.rounds + 1):
                        for mode in order:
                            grant = None
                            if mode == "static":
                                fixed = ws.credentials_for(args.static_min_life)
                                grant = WorkspaceGrant.of(ws, fixed)
                            client.run(use_filesystem_of, ws.name, grant)
                            run = _round(client, ws, workers, mode, tasks, size)
                            if run is not None and rnd > 0:
                                runs.append(run)
                                _say(f"bench:   {mode:6s} {run.mib_per_s:8.1f} MiB/s")
                        order.reverse()
                        collect = getattr(plat.s3, "gc", None)
                        if collect is not None:
                            collect()  # memstore keeps deleted objects in RAM until then
                finally:
                    pushes[workers] = handle.pushes
                    handle.close()
    load_after = os.getloadavg()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "size_mib": args.size_mib,
        "tasks_per_worker": args.tasks_per_worker,
        "rounds": args.rounds,
        "sts_duration": args.sts_duration,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "pushes": pushes,
        "share_seconds": {k: round(v, 4) for k, v in share_seconds.items()},
        "runs": [r.as_dict() for r in runs],
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def report(result: dict[str, Any]) -> str:
    by: dict[tuple[int, str], list[float]] = {}
    for run in result["runs"]:
        by.setdefault((run["workers"], run["mode"]), []).append(run["mib_per_s"])
    lines = [
        f"### Dask workers writing to a workspace, {result['when']}",
        "",
        f"{result['size_mib']} MiB per task, {result['tasks_per_worker']} tasks per worker, "
        f"{result['rounds']} counted rounds (shared/static interleaved, median shown), "
        f"STS credentials of {result['sts_duration']} s, {result['cpus']} CPUs, load "
        f"{result['load_before'][0]} before / {result['load_after'][0]} after. radosgw, the "
        "client and the workers share this machine's cores (the load includes them).",
        "",
        "| workers | shared MiB/s | static MiB/s | shared vs static | pushes | share() s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    # JSON keys are strings once the result went through a file
    pushes = {int(k): v for k, v in result["pushes"].items()}
    share_seconds = {int(k): v for k, v in result["share_seconds"].items()}
    workers_seen = sorted({w for w, _ in by})
    for workers in workers_seen:
        shared = by.get((workers, "shared"), [])
        static = by.get((workers, "static"), [])
        if not shared or not static:
            continue
        s, t = _median(shared), _median(static)
        lines.append(
            f"| {workers} | {s:.1f} | {t:.1f} | {100 * (s - t) / t:+.1f} % | "
            f"{pushes.get(workers, '?')} | {share_seconds.get(workers, 0.0):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--tasks-per-worker", type=int, default=4)
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sts-duration", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="4 MiB, 2 tasks per worker, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.tasks_per_worker, args.rounds = 4, 2, 1
    # static keys must outlive a round: ask for most of a lifetime
    args.static_min_life = 0.8 * args.sts_duration
    result = bench(args)
    stem = "dask_cluster_quick" if args.quick else "dask_cluster"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
