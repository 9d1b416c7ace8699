"""Many concurrent uploads: ``sts_bridge.aio`` against the thread-based SDK.

    .venv/bin/python bench/aio_throughput.py [--uploads 32] [--mib 8] [--rounds 3]

On the local platform (service workspace), rounds of ``--uploads`` uploads
of ``--mib`` MiB each at once, interleaved: ``asyncio.gather`` of
``AsyncWorkspace.upload`` (bytes), then a ``ThreadPoolExecutor`` of as many
threads calling ``Workspace.upload``, the first contender alternating each
round. Prints MiB/s per round and the median; writes
``results/aio_throughput.json``. ``--aio-workers 4,8,64`` adds one aio
contender per size of the executor (``transfer_executor(N)``, as the
default ``shared_executor`` is built), interleaved with the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sts_bridge_devstack.platform import LocalPlatform

from sts_bridge import Client
from sts_bridge.aio import AsyncWorkspace, transfer_executor

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=32)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--aio-workers", default="", help="comma-separated executor sizes, an aio contender each"
    )
    args = parser.parse_args(argv)
    body = os.urandom(args.mib * MiB)
    total_mib = args.uploads * args.mib

    tmp = tempfile.mkdtemp(prefix="sts-bridge-aio-bench-")
    try:
        with LocalPlatform(workdir=Path(tmp)) as platform:
            os.environ.update(platform.env())
            os.environ["STS_BRIDGE_CACHE_DIR"] = str(Path(tmp) / "cache")
            ws = Client.from_env().workspace()
            aws = AsyncWorkspace(ws)

            def threads(base: str) -> None:
                with ThreadPoolExecutor(args.uploads) as pool:
                    list(pool.map(lambda i: ws.upload(body, f"{base}{i}"), range(args.uploads)))

            async def gathered(base: str, target: AsyncWorkspace = aws) -> None:
                await asyncio.gather(
                    *(target.upload(body, f"{base}{i}") for i in range(args.uploads))
                )

            contenders: dict[str, Any] = {
                "aio": lambda base: asyncio.run(gathered(base)),
                "threads": threads,
            }
            for size in (int(n) for n in args.aio_workers.split(",") if n):
                sized = AsyncWorkspace(ws, executor=transfer_executor(size))
                contenders[f"aio-{size}"] = lambda base, sized=sized: asyncio.run(
                    gathered(base, sized)
                )
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            order = list(contenders)
            for round_number in range(args.rounds + 1):  # the first round warms up
                for name in order:
                    base = f"bench-aio/{uuid.uuid4().hex}/"
                    started = time.perf_counter()
                    contenders[name](base)
                    seconds = time.perf_counter() - started
                    ws.delete(base, recursive=True)
                    if round_number:
                        rates[name].append(total_mib / seconds)
                order.reverse()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "args": vars(args),
        "mib_per_s": {n: [round(r, 1) for r in v] for n, v in rates.items()},
        "median_mib_per_s": {n: round(statistics.median(v), 1) for n, v in rates.items()},
    }
    out = HERE / "results" / "aio_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
