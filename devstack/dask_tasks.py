"""Functions that Dask tasks run in the tests and the benchmark of ``sts_bridge.dask``.

They live in an installed package because the scheduler and the workers
unpickle task graphs by reference: a function defined in a test module
would not import there ("another machine" has no tests/ folder).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

__all__ = [
    "make_buffer",
    "payload",
    "worker_environment",
    "write_buffer",
    "write_objects",
    "write_static_s3fs",
]


def payload(key: str) -> bytes:
    """The bytes of ``key``: derived from the key alone, 1-8 KiB."""
    seed = hashlib.sha256(key.encode()).digest()
    return seed * (32 + seed[0] % 224)


def _worker_address() -> str:
    from distributed import get_worker

    return str(get_worker().address)


def write_objects(base: str, keys: list[str]) -> tuple[str, list[str]]:
    """Write :func:`payload` of each key under ``base`` (a workspace:// URL) with fsspec."""
    import fsspec

    fs = fsspec.filesystem("workspace")
    for key in keys:
        fs.pipe_file(f"{base}/{key}", payload(key))
    return _worker_address(), keys


def write_static_s3fs(options: dict[str, Any], bucket_key: str, data: bytes) -> str:
    """The anchors' pattern: s3fs with a ``storage_options`` snapshot copied to the worker."""
    import s3fs

    fs = s3fs.S3FileSystem(**{"skip_instance_cache": True, **options})
    fs.pipe_file(bucket_key, data)
    return bucket_key


def worker_environment() -> list[str]:
    """Names of the platform and AWS variables in this process's environment."""
    return sorted(k for k in os.environ if k.startswith(("TERRAPI_", "STS_BRIDGE_", "AWS_")))


def make_buffer(size: int) -> int:
    """Keep ``size`` random bytes on this worker for :func:`write_buffer`."""
    from distributed import get_worker

    get_worker()._sts_bridge_bench_buffer = os.urandom(size)  # type: ignore[attr-defined]
    return size


def write_buffer(base: str, key: str) -> tuple[str, float]:
    """Write the worker's buffer to ``base/key``; returns the key and the seconds it took."""
    import fsspec
    from distributed import get_worker

    data = get_worker()._sts_bridge_bench_buffer  # type: ignore[attr-defined]
    started = time.perf_counter()
    fsspec.filesystem("workspace").pipe_file(f"{base}/{key}", data)
    return key, time.perf_counter() - started
