#!/usr/bin/env python
"""Zarr through ``workspace://`` against s3fs with static keys and obstore.

    .venv/bin/python bench/datastack.py                 # 256 MiB, 2 rounds (shared machine)
    .venv/bin/python bench/datastack.py --size-mib 1024 --reps 3   # the 1 GiB run

One run starts the local platform (production lifetimes: 900 s STS
credentials) and, on the same radosgw and workspace, runs three contenders
interleaved (A B C, the first rotating each round, a warm-up round first
that is not counted), each as its own process measured from outside
(wall, CPU user+sys, peak RSS; see ``_measure.py``), and each reports the
seconds of its data phase (after imports, building the filesystem and
finding the workspace; the first request, with its connection and
credentials, is included):

- ``workspace``: ``zarr`` given ``workspace://<ws>/<key>`` (sts-bridge's
  fsspec filesystem: chunks through the SDK's signed requests, the rest
  through s3fs over a refreshing aiobotocore session);
- ``s3fs-static`` (the anchor): ``zarr`` given ``s3://bucket/prefix/...``
  with ``storage_options`` holding a snapshot of the same STS credentials;
- ``obstore``: obstore's fsspec layer (``obstore.fsspec.FsspecStore``) with
  sts-bridge's refreshing ``credential_provider``, wrapped by ``zarr``'s
  ``FsspecStore``.

Parquet reads by polars and duckdb (``polars-read``, ``duckdb-read``) of a
table of ``--size-mib`` MiB (an int64 and a float64 column, uncompressed,
written once before the rounds) have two contenders: ``workspace`` (polars
with ``polars_options(ws)``, its own object store and sts-bridge's
refreshing ``credential_provider``; duckdb with the ``workspace://``
filesystem registered) and ``s3fs-static`` (polars' own object store with
the snapshot as static keys in ``storage_options``; duckdb with a static-key
s3fs registered: duckdb's httpfs extension is not installable offline).

Scenarios: ``zarr-write`` / ``zarr-read`` of an int32 array of
``--size-mib`` MiB in 4 MiB chunks, uncompressed, written and read in
slabs of 16 chunks (so the data held in memory is 64 MiB whatever the
size, and RSS says what the store costs); ``small-write`` / ``small-read``
of ``--small-count`` objects of 16 KiB through the fsspec batch API
(``pipe`` / ``cat``). Ratios are each contender's median over the anchor's.

Results: a markdown table on stdout and in ``bench/results/datastack.md``
(+ ``.json``). Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PY = sys.executable
MiB = 1 << 20
CHUNK_BYTES = 4 * MiB
SLAB_CHUNKS = 16
SMALL_BYTES = 16 * 1024
WORKSPACE = "gep-processing-results-a2s-service-workspace"
CONTENDERS = ("workspace", "s3fs-static", "obstore")
SCENARIOS = ("zarr-write", "zarr-read", "small-write", "small-read", "polars-read", "duckdb-read")
#: Scenarios of one tool, where obstore's fsspec layer is not a contender.
TOOL_SCENARIOS = ("polars-read", "duckdb-read")
TABLE_KEY = "table.parquet"


# --------------------------------------------------------------------------- worker
def _filesystem_and_root(contender: str, key: str, asynchronous: bool) -> tuple[Any, str]:
    """``(fsspec filesystem, root path)`` of one contender."""
    if contender == "workspace":
        from sts_bridge.interop.filesystem import WorkspaceFileSystem

        fs = WorkspaceFileSystem(asynchronous=asynchronous)
        fs.source(WORKSPACE)  # resolved in setup, as the obstore contender's workspace is
        return fs, f"{WORKSPACE}/{key}"
    bucket, prefix = os.environ["BENCH_BUCKET"], os.environ["BENCH_PREFIX"]
    if contender == "s3fs-static":
        import s3fs

        fs = s3fs.S3FileSystem(
            key=os.environ["BENCH_ACCESS_KEY"],
            secret=os.environ["BENCH_SECRET_KEY"],
            token=os.environ["BENCH_SESSION_TOKEN"],
            endpoint_url=os.environ["BENCH_ENDPOINT"],
            client_kwargs={"region_name": os.environ["BENCH_REGION"]},
            config_kwargs={
                "s3": {"addressing_style": "path"},
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
            asynchronous=asynchronous,
        )
        return fs, f"{bucket}/{prefix}{key}"
    if contender == "obstore":
        from obstore.fsspec import FsspecStore

        from sts_bridge import Client
        from sts_bridge.interop.tool_credentials import obstore_credential_provider

        ws = Client.from_env().workspace(WORKSPACE)
        fs = FsspecStore(
            "s3",
            config={
                "endpoint": ws.endpoint_url,
                "region": ws.region,
                "virtual_hosted_style_request": False,
            },
            client_options={"allow_http": True},
            credential_provider=obstore_credential_provider(ws),
            asynchronous=asynchronous,
        )
        return fs, f"{bucket}/{prefix}{key}"
    raise SystemExit(f"unknown contender {contender!r}")


def worker(contender: str, scenario: str, key: str, size: int, count: int) -> None:
    """Run one scenario; print the seconds of its data phase (after imports and setup)."""
    if scenario in TOOL_SCENARIOS:
        run = _polars_read if scenario == "polars-read" else _duckdb_read
        seconds = run(contender, key, size)
    else:
        import numpy as np

        fs, root = _filesystem_and_root(contender, key, asynchronous=scenario.startswith("zarr"))
        started = time.perf_counter()
        _run(fs, root, np, scenario, size, count)
        seconds = time.perf_counter() - started
    print(json.dumps({"data_seconds": seconds}))


def _table_rows(size: int) -> int:
    return size // 16  # an int64 and a float64 per row


def _write_table(key: str, size: int) -> None:
    """The parquet table both tools read (not measured)."""
    import polars as pl

    from sts_bridge import Client
    from sts_bridge.interop.tool_credentials import polars_options

    ws = Client.from_env().workspace(WORKSPACE)
    n = _table_rows(size)
    frame = pl.DataFrame({"i": pl.arange(0, n, eager=True), "x": pl.arange(0, n, eager=True) * 0.5})
    frame.write_parquet(
        ws.s3_url(f"{key}/{TABLE_KEY}"), compression="uncompressed", **polars_options(ws)
    )


def _check_sums(size: int, sum_i: int, sum_x: float) -> None:
    n = _table_rows(size)
    if sum_i != n * (n - 1) // 2 or abs(sum_x - sum_i * 0.5) > 1e-6 * max(1.0, sum_x):
        raise SystemExit(f"wrong sums {sum_i} {sum_x}")


def _polars_read(contender: str, key: str, size: int) -> float:
    import polars as pl

    if contender == "workspace":
        from sts_bridge import Client
        from sts_bridge.interop.tool_credentials import polars_options

        ws = Client.from_env().workspace(WORKSPACE)
        url, options = ws.s3_url(f"{key}/{TABLE_KEY}"), polars_options(ws)
    else:
        url = f"s3://{os.environ['BENCH_BUCKET']}/{os.environ['BENCH_PREFIX']}{key}/{TABLE_KEY}"
        options = {
            "storage_options": {
                "aws_access_key_id": os.environ["BENCH_ACCESS_KEY"],
                "aws_secret_access_key": os.environ["BENCH_SECRET_KEY"],
                "aws_session_token": os.environ["BENCH_SESSION_TOKEN"],
                "aws_endpoint_url": os.environ["BENCH_ENDPOINT"],
                "aws_region": os.environ["BENCH_REGION"],
                "aws_allow_http": "true",
                "aws_virtual_hosted_style_request": "false",
            }
        }
    started = time.perf_counter()
    frame = pl.read_parquet(url, **options)
    seconds = time.perf_counter() - started
    _check_sums(size, int(frame["i"].sum()), float(frame["x"].sum()))
    return seconds


def _duckdb_read(contender: str, key: str, size: int) -> float:
    import duckdb

    fs, root = _filesystem_and_root(contender, key, asynchronous=False)
    scheme = "workspace" if contender == "workspace" else "s3"
    con = duckdb.connect()
    con.register_filesystem(fs)
    started = time.perf_counter()
    url = f"{scheme}://{root}/{TABLE_KEY}"  # our own key
    query = f"SELECT sum(i), sum(x) FROM read_parquet('{url}')"  # noqa: S608
    sum_i, sum_x = con.sql(query).fetchall()[0]
    seconds = time.perf_counter() - started
    _check_sums(size, int(sum_i), float(sum_x))
    return seconds


def _run(fs: Any, root: str, np: Any, scenario: str, size: int, count: int) -> None:
    if scenario.startswith("zarr"):
        import zarr
        from zarr.storage import FsspecStore

        store = FsspecStore(fs, path=root, read_only=scenario == "zarr-read")
        chunk = CHUNK_BYTES // 4
        n = size // 4
        slab = chunk * SLAB_CHUNKS
        if scenario == "zarr-write":
            array = zarr.create_array(
                store,
                shape=(n,),
                chunks=(chunk,),
                dtype="int32",
                compressors=None,
                overwrite=True,
            )
            for start in range(0, n, slab):
                stop = min(start + slab, n)
                array[start:stop] = np.arange(start, stop, dtype=np.int32)
        else:
            array = zarr.open_array(store, mode="r")
            for start in range(0, n, slab):
                stop = min(start + slab, n)
                got = array[start:stop]
                if got[0] != start or got[-1] != stop - 1:
                    raise SystemExit(f"wrong data at {start}")
        return
    paths = [f"{root}/small/{i:05d}" for i in range(count)]
    if scenario == "small-write":
        payload = os.urandom(SMALL_BYTES)
        fs.pipe({p: payload for p in paths})
    else:
        got = fs.cat(paths)
        if len(got) != count or any(len(v) != SMALL_BYTES for v in got.values()):
            raise SystemExit("small-read: wrong answer")


# --------------------------------------------------------------------------- driver
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _credentials(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [PY, "-m", "sts_bridge", "credentials", WORKSPACE, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(proc.stdout))


def _medians(samples: list[Any]) -> dict[str, float]:
    return {
        "data": statistics.median(s.data_seconds for s in samples),
        "wall": statistics.median(s.wall for s in samples),
        "cpu": statistics.median(s.cpu for s in samples),
        "rss_mb": max(s.rss for s in samples) / 1e6,
        "load": statistics.mean(s.load for s in samples),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-mib", type=int, default=256, help="zarr array size (default 256)")
    p.add_argument("--reps", type=int, default=2, help="counted rounds (default 2)")
    p.add_argument("--small-count", type=int, default=500, help="small objects (default 500)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--worker", nargs=5, metavar=("CONTENDER", "SCENARIO", "KEY", "SIZE", "N"))
    args = p.parse_args(argv)
    if args.worker:
        contender, scenario, key, size, count = args.worker
        worker(contender, scenario, key, int(size), int(count))
        return 0

    from _measure import run_measured
    from sts_bridge_devstack.platform import LocalPlatform

    scenarios = [s for s in args.only.split(",") if s]
    size = args.size_mib * MiB
    results: dict[str, dict[str, list[Any]]] = {s: {c: [] for c in CONTENDERS} for s in scenarios}
    failures: dict[str, dict[str, list[int]]] = {s: {c: [] for c in CONTENDERS} for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="bench-datastack-") as tmp, LocalPlatform() as plat:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TERRAPI_"))}
        env.update(plat.env())
        env["STS_BRIDGE_CACHE_DIR"] = str(Path(tmp) / "cache")
        env["STS_BRIDGE_CONFIG_FILE"] = str(Path(tmp) / "no-config")
        env["TERRAPI_WORKSPACE"] = WORKSPACE
        run_id = uuid.uuid4().hex[:8]
        table_key = f"bench-datastack/{run_id}/tables"
        if any(s in TOOL_SCENARIOS for s in scenarios):
            code = f"import datastack; datastack._write_table({table_key!r}, {size})"
            subprocess.run([PY, "-c", code], env=env, cwd=HERE, check=True, timeout=1800)
        for rnd in range(args.reps + 1):
            # The anchor's snapshot dies with the STS credentials (15 minutes):
            # a fresh one each round (this also warms the cache every contender
            # starts from).
            creds = _credentials(env)
            env.update(
                BENCH_BUCKET=creds["bucket"],
                BENCH_PREFIX=creds["prefix"],
                BENCH_ENDPOINT=creds["endpoint_url"],
                BENCH_REGION=creds["region"],
                BENCH_ACCESS_KEY=creds["access_key_id"],
                BENCH_SECRET_KEY=creds["secret_access_key"],
                BENCH_SESSION_TOKEN=creds["session_token"],
            )
            order = CONTENDERS[rnd % 3 :] + CONTENDERS[: rnd % 3]
            for contender in order:
                key = f"bench-datastack/{run_id}/{rnd}-{contender}"
                for scenario in scenarios:
                    if scenario in TOOL_SCENARIOS and contender == "obstore":
                        continue
                    # the tools read the one table written before the rounds
                    run_key = table_key if scenario in TOOL_SCENARIOS else key
                    argv_ = [
                        PY,
                        str(Path(__file__).resolve()),
                        "--worker",
                        contender,
                        scenario,
                        run_key,
                        str(size),
                        str(args.small_count),
                    ]
                    sample = run_measured(argv_, env=env, timeout=1800, check=False)
                    if sample.rc != 0:  # say so, count it, and try once more
                        failures[scenario][contender].append(sample.rc)
                        tail = (sample.stderr or sample.stdout).strip()[-300:]
                        _say(f"round {rnd} {contender} {scenario} FAILED rc={sample.rc}: {tail}")
                        sample = run_measured(argv_, env=env, timeout=1800)
                    sample.data_seconds = json.loads(sample.stdout.strip().splitlines()[-1])[
                        "data_seconds"
                    ]
                    tag = " (warm-up)" if rnd == 0 else ""
                    _say(
                        f"round {rnd} {contender:12s} {scenario:12s} wall {sample.wall:7.2f} s  "
                        f"data {sample.data_seconds:7.2f} s  "
                        f"cpu {sample.cpu:6.2f} s  rss {sample.rss / 1e6:7.1f} MB  "
                        f"load {sample.load:4.1f}{tag}"
                    )
                    if rnd:
                        results[scenario][contender].append(sample)
                if any(s not in TOOL_SCENARIOS for s in scenarios):
                    _cleanup(env, key)  # the tools only read the one table
        if any(s in TOOL_SCENARIOS for s in scenarios):
            _cleanup(env, table_key)
    report = _report(results, failures, args, scenarios)
    print(report)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "datastack.md").write_text(report)
    doc = _as_json(results, args)
    doc["failures"] = failures
    (out / "datastack.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def _cleanup(env: dict[str, str], key: str) -> None:
    code = (
        "from sts_bridge.interop.filesystem import WorkspaceFileSystem as F; "
        f"F().rm({WORKSPACE + '/' + key!r}, recursive=True)"
    )
    subprocess.run([PY, "-c", code], env=env, check=True, timeout=600)


def _as_json(results: dict[str, dict[str, list[Any]]], args: Any) -> dict[str, Any]:
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "size_mib": args.size_mib,
        "small_count": args.small_count,
        "reps": args.reps,
        "results": {
            s: {
                c: [{**x.as_dict(), "data_seconds": x.data_seconds} for x in samples]
                for c, samples in by.items()
            }
            for s, by in results.items()
        },
    }


def _report(
    results: dict[str, dict[str, list[Any]]],
    failures: dict[str, dict[str, list[int]]],
    args: Any,
    scenarios: list[str],
) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Data stack, {when}: zarr and parquet {args.size_mib} MiB (zarr in 4 MiB chunks), "
        f"{args.small_count} x 16 KiB objects, median of {args.reps} interleaved rounds",
        "",
        "| scenario | contender | data s | x anchor | process wall s | x anchor | CPU s "
        "| x anchor | peak RSS MB | load | failed runs (exit status) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario in scenarios:
        anchor = _medians(results[scenario]["s3fs-static"])
        for contender in CONTENDERS:
            if not results[scenario][contender]:
                continue  # not a contender of this scenario
            m = _medians(results[scenario][contender])
            lines.append(
                f"| {scenario} | {contender} | {m['data']:.2f} | {m['data'] / anchor['data']:.2f} "
                f"| {m['wall']:.2f} | {m['wall'] / anchor['wall']:.2f} "
                f"| {m['cpu']:.2f} | {m['cpu'] / anchor['cpu']:.2f} | {m['rss_mb']:.0f} "
                f"| {m['load']:.1f} | {', '.join(map(str, failures[scenario][contender])) or '-'} |"
            )
    lines.append("")
    lines.append(
        f"(finished {time.strftime('%H:%M', time.gmtime())} UTC; load: the 1-minute average "
        "before each run, which includes the benchmark's own radosgw and client)"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
