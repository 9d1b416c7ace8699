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
    "use_filesystem_of",
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


def make_buffer(size: int, dask_worker: Any = None) -> int:
    """Keep ``size`` random bytes on this worker for :func:`write_buffer` (``client.run``)."""
    dask_worker._sts_bridge_bench_buffer = os.urandom(size)
    return size


def use_filesystem_of(name: str, grant: Any = None, dask_worker: Any = None) -> str:
    """``client.run``: make :func:`write_buffer` use one filesystem of its own on this worker.

    Over a fixed snapshot when ``grant`` is given (static keys), else over
    the source ``sts_bridge.dask.share`` registered here for ``name``.
    """
    from sts_bridge.dask import SharedWorkspaceSource, shared_source
    from sts_bridge.interop.filesystem import WorkspaceFileSystem

    source = SharedWorkspaceSource(grant) if grant is not None else shared_source(name)
    if source is None:
        raise RuntimeError(f"workspace {name!r} is not shared with this worker")
    dask_worker._sts_bridge_bench_fs = WorkspaceFileSystem(source, skip_instance_cache=True)
    return type(source).__name__


def write_buffer(base: str, key: str) -> tuple[str, float]:
    """Write the worker's buffer to ``base/key``; returns the key and the seconds it took.

    Through the filesystem :func:`use_filesystem_of` set, else ``workspace://``'s default.
    """
    import fsspec
    from distributed import get_worker

    worker = get_worker()
    data = worker._sts_bridge_bench_buffer  # type: ignore[attr-defined]
    fs = getattr(worker, "_sts_bridge_bench_fs", None) or fsspec.filesystem("workspace")
    started = time.perf_counter()
    fs.pipe_file(f"{base}/{key}", data)
    return key, time.perf_counter() - started
