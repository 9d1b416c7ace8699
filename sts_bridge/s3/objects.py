"""Whole objects and byte ranges as ``bytes``: one signed request each.

For callers that already hold the bytes, or want them in memory: the fsspec
filesystem's ``cat_file`` / ``pipe_file``, which is where Zarr chunks and
small objects go. One GET (whole object or one range) or one PUT (signed
payload, nothing left behind on failure: a single PUT has no parts) per
call, through :class:`~sts_bridge.s3.signed_http.S3Http`, so every request is
signed with fresh credentials, retried when transient, re-signed once when
the store refuses the credentials, and its failure mapped to the
:class:`~sts_bridge.errors.StorageError` branch like every other transfer.

A PUT also records the object's SHA-256 in ``x-amz-meta-sha256`` (it is the
signed payload hash, so it costs nothing): ``sts-bridge sync`` then trusts
objects written through ``workspace://`` by content, as it trusts its own.

The calls are blocking; :meth:`ObjectIO.run` runs one on the object's own
thread pool from a coroutine (one pooled connection per thread), and
:meth:`ObjectIO.run_each` runs a batch of them there (fsspec's ``pipe`` /
``cat`` of many objects) with one hand-off per thread instead of one per
call.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sts_bridge.s3.batch_puts import BatchPuts
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.signed_http import BucketTarget, S3Http
from sts_bridge.s3.upload import SHA256_METADATA

__all__ = ["ObjectIO", "empty_range", "needs_size", "range_header"]

_T = TypeVar("_T")

#: 416: a range that starts at or after the end of the object (an empty read).
_GET_OK = frozenset({200, 206, 416})


def range_header(start: int | None, end: int | None) -> str | None:
    """The ``Range`` header of Python-slice-like bounds (``end`` exclusive), or
    ``None`` for the whole object.

    A negative ``start`` with no ``end`` counts from the end of the object.
    A negative ``end`` needs the size and is refused here (``ValueError``).
    Bounds that select nothing have no header: check :func:`empty_range` first.
    """
    if needs_size(start, end):
        raise ValueError(f"the range [{start}, {end}) needs the size of the object")
    if start is not None and start < 0:
        return f"bytes={start}"  # bytes=-N: the last N bytes
    if not start and end is None:
        return None
    first = start or 0
    return f"bytes={first}-" if end is None else f"bytes={first}-{end - 1}"


def needs_size(start: int | None, end: int | None) -> bool:
    """Whether bounds count an end from the end of the object (which one GET cannot say)."""
    return end is not None and (end < 0 or (start or 0) < 0)


def empty_range(start: int | None, end: int | None) -> bool:
    """Whether non-negative bounds select no byte at all."""
    return end is not None and end >= 0 and (start or 0) >= 0 and end <= (start or 0)


class ObjectIO:
    """Single-request reads and writes of objects in one bucket.

    :param target: the bucket, endpoint and credentials (a workspace or any
        :class:`~sts_bridge.s3.signed_http.BucketTarget`); keys given to the
        methods are full keys (the caller confines and prefixes them).
    :param config: the stall timeout and retries of every request.
    :param concurrency: requests in flight at most (threads and pooled connections).
    """

    def __init__(
        self,
        target: BucketTarget,
        config: TransferConfig | None = None,
        *,
        concurrency: int = 16,
    ) -> None:
        self.http = S3Http(target, config or TransferConfig(), connections=concurrency)
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        #: Batches of small PUTs from an event loop (fsspec's ``pipe``).
        self.batch_puts = BatchPuts(self.http, self._threads)

    def get(self, full_key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or those of ``[start, end)`` (short at the end of the object)."""
        if empty_range(start, end):
            return b""
        header = range_header(start, end)
        headers = {"Range": header} if header else None
        resp = self.http.call(
            "GET",
            full_key,
            f"reading {self.http.user_key(full_key)!r}",
            headers=headers,
            ok=_GET_OK,
            answer_limit=None,  # the object the caller asked for, whatever its size
        )
        if resp.status == 416:
            return b""
        data: bytes = resp.data
        if header and resp.status == 200 and start and start > 0:
            # A store that ignores Range sends the whole object.
            data = data[start:end]
        return data

    def put(self, full_key: str, data: bytes, *, exclusive: bool = False) -> str:
        """Store ``data`` under ``full_key`` in one PUT; returns the ETag
        (:attr:`batch_puts` sends the same request from an event loop).

        ``exclusive`` stores it only if no object has that key
        (``If-None-Match: *``): the store refuses otherwise, raised as
        :class:`~sts_bridge.errors.PreconditionFailedError`.
        """
        digest = hashlib.sha256(data).hexdigest()
        headers = {f"x-amz-meta-{SHA256_METADATA}": digest}
        if exclusive:
            headers["If-None-Match"] = "*"
        return self.http.put(full_key, data, digest, headers=headers)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on this object's threads, awaited from a coroutine."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads(), fn, *args)

    async def run_each(
        self,
        fn: Callable[..., _T],
        items: Sequence[tuple[Any, ...]],
        *,
        limit: int | None = None,
        stop_at_error: bool = False,
    ) -> list[_T | Exception]:
        """``fn(*item)`` for every item on this object's threads, awaited from a coroutine.

        At most ``limit`` (``None`` or below 1: :attr:`concurrency`, also the most) threads
        work through the items, each taking the next one when it is done, so
        a batch costs one hand-off between the event loop and a thread per
        thread, not per item: with one per item (a future, a wake-up of the
        loop, a wake-up of a thread) the hand-offs of small objects cost
        more CPU than the requests themselves. Returns the results in the
        items' order, an item's exception in its place. With
        ``stop_at_error`` no item starts after one fails, and the first
        exception is raised once the items in flight are done. Cancelled,
        no further item starts (those in flight finish on their threads).
        """
        if not items:
            return []
        # fsspec's batch_size: None or -1 (or 0) puts no limit of its own
        most = limit if limit is not None and limit > 0 else self.concurrency
        workers = min(self.concurrency, most, len(items))
        results: list[Any] = [None] * len(items)
        taking = threading.Lock()
        stop = threading.Event()
        failed: list[Exception] = []
        next_index = iter(range(len(items)))

        def work() -> None:
            while not stop.is_set():
                with taking:
                    i = next(next_index, None)
                if i is None:
                    return
                try:
                    results[i] = fn(*items[i])
                except Exception as exc:
                    results[i] = exc
                    if stop_at_error:
                        failed.append(exc)
                        stop.set()

        loop = asyncio.get_running_loop()
        pool = self._threads()
        try:
            await asyncio.gather(*(loop.run_in_executor(pool, work) for _ in range(workers)))
        except asyncio.CancelledError:
            stop.set()
            raise
        if failed:
            raise failed[0]
        return results

    def _threads(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.concurrency, thread_name_prefix="sts-bridge-objects"
                    )
                pool = self._pool
        return pool

    def close(self) -> None:
        """Let running requests finish, then close the threads and connections."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        self.batch_puts.close()
        self.http.close()
