"""asyncio: ``AsyncWorkspace`` and ``AsyncClient``, the SDK's operations as coroutines.

>>> ws = await AsyncClient(sts_bridge.Client.from_env()).workspace()   # doctest: +SKIP
>>> await ws.upload(b"...", "results/out.bin")                          # doctest: +SKIP
>>> async for obj in ws.list("results/"): ...                           # doctest: +SKIP

Each operation runs the SDK's own transfer engine in a worker thread of a
bounded executor, so the event loop never waits on a socket, a file or a
hash. Why threads and not a second, asyncio HTTP engine: the engine's
planning, signing, retries, resume records and error mapping then exist
once (style note 17); the transfer bytes move in C (hashlib, ssl, socket)
with the GIL released, and the loop's only work is to await a future.

Cancellation: cancelling a coroutine sets an event the worker checks at
every part boundary and at every read of an async stream; the worker then
aborts what it started (a multipart upload is aborted, its parts deleted)
and the coroutine waits for that abort before it re-raises
``CancelledError``. A single-PUT upload (below the multipart threshold) that
was already sent completes: cancelling it cannot un-send it.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures as cf
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sts_bridge.errors import TransferError
from sts_bridge.s3.transport import BodyPieces

if TYPE_CHECKING:
    from sts_bridge.client import Client
    from sts_bridge.credentials.refreshing import S3Credentials
    from sts_bridge.s3.transfer_types import ObjectInfo, PresignedUrl, ProgressCallback
    from sts_bridge.s3.transfers import Source, UploadResult
    from sts_bridge.workspace import Workspace

__all__ = [
    "DEFAULT_MAX_THREADS",
    "AsyncClient",
    "AsyncWorkspace",
    "shared_executor",
    "transfer_executor",
]

T = TypeVar("T")

#: Worker threads of the executor shared by every async object that is given none:
#: 4 per CPU, at most 32 (the reference service takes 2 per CPU, trading some
#: upload latency for a shorter lag, docs/services.md). More runnable transfer
#: threads keep the event loop waiting for a core: 50 uploads of 8 MiB through
#: the reference service on 2 cores held its loop up 66-227 ms with 64 threads,
#: 53-100 ms with 8, while 32 concurrent uploads moved as many bytes per second
#: as 32 threads of the sync SDK (docs/services.md).
DEFAULT_MAX_THREADS = min(32, 4 * (os.cpu_count() or 1))

_shared: cf.ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()


def shared_executor() -> cf.ThreadPoolExecutor:
    """The bounded executor async objects use by default (threads start on demand)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = transfer_executor(DEFAULT_MAX_THREADS)
        return _shared


def transfer_executor(
    max_workers: int = DEFAULT_MAX_THREADS,
    *,
    nice: int = 0,
    thread_name_prefix: str = "sts-bridge-aio",
) -> cf.ThreadPoolExecutor:
    """A bounded executor for async objects (``executor=``), its threads at CPU
    priority ``nice`` on Linux (each thread has its own nice value; elsewhere
    ``nice`` is ignored).

    ``nice=10`` lets the event loop get a core before the transfers when both
    wait for one (the reference service's ``RESULTS_TRANSFER_NICE``). It is a
    trade, not free, hence off by default: a thread holding the GIL's
    internal lock while it waits for a core holds the loop up for as long
    (measured: the loop blocked 36-82 ms on that lock while a nice-10 worker
    waited for a core, on a loaded machine; docs/services.md). A thread
    cannot lower its nice value again without privileges: give these threads
    to transfers only.
    """
    if nice < 0:
        raise ValueError("nice must be 0 or more (raising a priority needs privileges)")
    if not nice:
        return cf.ThreadPoolExecutor(max_workers, thread_name_prefix=thread_name_prefix)
    return cf.ThreadPoolExecutor(
        max_workers,
        thread_name_prefix=thread_name_prefix,
        initializer=_run_at_nice,
        initargs=(nice,),
    )


def _run_at_nice(nice: int) -> None:
    """The calling thread's own nice value. Linux only: there ``setpriority`` of a
    thread id sets that thread's; elsewhere the id could name another process."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # a container that refuses it: run as is
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class Cancelled(TransferError):
    """The coroutine driving a transfer was cancelled (raised in its worker thread)."""

    def __init__(self) -> None:
        super().__init__("the transfer was cancelled")


async def run_cancellable(
    executor: cf.Executor | None,
    work: Callable[[threading.Event], T],
    on_cancel: Callable[[], None] | None = None,
) -> T:
    """``work(cancelled)`` in a worker thread; on cancellation, set the event and wait for it.

    ``on_cancel`` runs right after the event is set (to wake a worker that
    waits on the loop). The coroutine re-raises ``CancelledError`` only once
    ``work`` has returned or raised, so whatever the worker was doing
    (aborting a multipart upload) is finished by then.
    """
    cancelled = threading.Event()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor or shared_executor(), work, cancelled)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancelled.set()
        if on_cancel is not None:
            on_cancel()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue  # cancelled again: the abort still has to finish
        if not future.cancelled():
            future.exception()  # retrieved: the worker's Cancelled is expected
        raise


#: Bytes an async stream hands to its worker per hop across threads: at least
#: ``BATCH``, up to ``MAX_BATCH`` when the worker asks for a whole part.
BATCH = 1 << 20
MAX_BATCH = 8 << 20


class _AsyncChunks:
    """A blocking ``read()`` over an async iterable of bytes, for a worker thread.

    Each read that needs more bytes asks the event loop for the next chunks
    and waits for them (the worker waits, never the loop). Cancellation
    cancels the pending ``__anext__`` too, so a stream that never yields
    again cannot hold the abort back.

    The loop only hands over the chunks it was given, and the upload engine
    takes them unjoined (``read_pieces``): the body is never copied in user
    space. A copy holds the GIL for its whole memcpy; a worker preempted
    in one (on a busy machine, or at a lower priority than the loop) would
    hold the event loop up for as long.
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        loop: asyncio.AbstractEventLoop,
        cancelled: threading.Event,
    ) -> None:
        self._iterator = chunks.__aiter__()
        self._loop = loop
        self._cancelled = cancelled
        self._held: collections.deque[memoryview] = collections.deque()
        self._finished = False
        self._pending: cf.Future[list[bytes]] | None = None

    async def _next(self, at_least: int) -> list[bytes]:
        """Chunks of at least ``at_least`` bytes (fewer only at the end), in one hop.

        One hop per chunk of a request body (64 KiB under uvicorn) would cost
        the loop a wake-up per chunk; batching makes it one per MiB. The
        chunks go to the worker as they are (joining them here would be a copy
        on the loop).
        """
        chunks: list[bytes] = []
        size = 0
        while size < at_least:
            try:
                chunk = await self._iterator.__anext__()
            except StopAsyncIteration:
                if not chunks:
                    raise
                break
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TransferError(f"an async stream yielded {type(chunk).__name__}, not bytes")
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
        return chunks

    def cancel_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            pending.cancel()

    def read(self, size: int = -1) -> bytes:
        return b"".join(self._take(size))

    def read_pieces(self, size: int) -> BodyPieces:
        """Up to ``size`` bytes as the loop's chunks, not joined (the upload engine
        hashes and sends them piece by piece: no copy, see ``BodyPieces``)."""
        return BodyPieces(self._take(size))

    def _take(self, size: int) -> list[memoryview]:
        pieces: list[memoryview] = []
        wanted = size if size is not None and size >= 0 else None
        while wanted is None or wanted > 0:
            if not self._held:
                batch = BATCH if wanted is None else min(max(wanted, BATCH), MAX_BATCH)
                if self._finished or not self._fill(batch):
                    break
            piece = self._held[0]
            if wanted is not None and len(piece) > wanted:
                pieces.append(piece[:wanted])
                self._held[0] = piece[wanted:]
                wanted = 0
                break
            pieces.append(self._held.popleft())
            if wanted is not None:
                wanted -= len(piece)
        return pieces

    def _fill(self, at_least: int) -> bool:
        if self._cancelled.is_set():
            raise Cancelled()
        pending = asyncio.run_coroutine_threadsafe(self._next(at_least), self._loop)
        self._pending = pending
        if self._cancelled.is_set():  # cancelled between the check above and now
            pending.cancel()
        try:
            chunks = pending.result()
        except StopAsyncIteration:
            self._finished = True
            return False
        except cf.CancelledError:
            raise Cancelled() from None
        finally:
            self._pending = None
        self._held.extend(memoryview(chunk).cast("B") for chunk in chunks)
        return True


class AsyncWorkspace:
    """A :class:`~sts_bridge.Workspace` whose operations are coroutines (see the module).

    :param workspace: the workspace to drive.
    :param executor: the worker threads (default :func:`shared_executor`).
    """

    def __init__(self, workspace: Workspace, *, executor: cf.Executor | None = None) -> None:
        self.workspace = workspace
        self._executor = executor

    def __repr__(self) -> str:
        return f"AsyncWorkspace({self.workspace!r})"

    @property
    def name(self) -> str:
        return self.workspace.name

    @property
    def prefix(self) -> str:
        return self.workspace.prefix

    def url(self, key: str = "") -> str:
        return self.workspace.url(key)

    async def close(self) -> None:
        """Release the workspace's connection pools (:meth:`Workspace.close
        <sts_bridge.Workspace.close>`, in a worker thread: closing sockets and
        s3fs sessions may wait)."""
        await run_cancellable(self._executor, lambda _cancelled: self.workspace.close())

    aclose = close  # contextlib.aclosing() and httpx's spelling

    async def __aenter__(self) -> AsyncWorkspace:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_cancellable(self._executor, lambda _cancelled: fn(*args, **kwargs))

    # -- transfers -----------------------------------------------------------------

    async def upload(
        self,
        source: Source,
        key: str | None = None,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        resumable: bool = True,
    ) -> UploadResult:
        """:meth:`Workspace.upload <sts_bridge.Workspace.upload>` (a file, bytes or a
        blocking binary stream); cancellable at every part boundary."""

        def work(cancelled: threading.Event) -> UploadResult:
            if cancelled.is_set():
                raise Cancelled()
            return self.workspace.upload(
                source,
                key,
                content_type=content_type,
                metadata=metadata,
                progress=_guarded(progress, cancelled),
                resumable=resumable,
            )

        return await run_cancellable(self._executor, work)

    async def upload_stream(
        self,
        chunks: AsyncIterable[bytes],
        key: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload what an async iterable of ``bytes`` yields (a request body, a
        generator) to ``key``: one part in memory per part in flight, multipart
        when it is larger than one part; cancellable at every chunk."""
        loop = asyncio.get_running_loop()
        holder: list[_AsyncChunks] = []

        def work(cancelled: threading.Event) -> UploadResult:
            reader = _AsyncChunks(chunks, loop, cancelled)
            holder.append(reader)
            if cancelled.is_set():
                raise Cancelled()
            return self.workspace.upload(
                reader,  # type: ignore[arg-type]
                key,
                content_type=content_type,
                metadata=metadata,
                progress=_guarded(progress, cancelled),
                resumable=False,
            )

        def wake() -> None:
            for reader in holder:
                reader.cancel_pending()

        return await run_cancellable(self._executor, work, wake)

    async def download(
        self,
        key: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """:meth:`Workspace.download <sts_bridge.Workspace.download>`; cancellable at every
        range (the partial temporary file is removed, ``dest`` is never touched)."""

        def work(cancelled: threading.Event) -> Path:
            if cancelled.is_set():
                raise Cancelled()
            return self.workspace.download(key, dest, progress=_guarded(progress, cancelled))

        return await run_cancellable(self._executor, work)

    async def list(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> AsyncIterator[ObjectInfo]:
        """:meth:`Workspace.list <sts_bridge.Workspace.list>` as an async iterator (one
        page fetched at a time, in a worker thread)."""
        pages = self.workspace.list(prefix, recursive=recursive, page_size=page_size)
        while True:
            batch = await self._call(lambda: builtins.list(itertools.islice(pages, page_size)))
            for item in batch:
                yield item
            if len(batch) < page_size:
                return

    async def delete(self, key_or_prefix: str, *, recursive: bool = False) -> int:
        """:meth:`Workspace.delete <sts_bridge.Workspace.delete>`."""
        return await self._call(self.workspace.delete, key_or_prefix, recursive=recursive)

    async def presign(
        self, key: str, method: str = "GET", expires_in: int | timedelta = 3600
    ) -> PresignedUrl:
        """:meth:`Workspace.presign <sts_bridge.Workspace.presign>` (may refresh credentials)."""
        return await self._call(self.workspace.presign, key, method, expires_in)

    async def presign_many(
        self, keys: Sequence[str], method: str = "GET", expires_in: int | timedelta = 3600
    ) -> builtins.list[PresignedUrl]:
        """:meth:`Workspace.presign_many <sts_bridge.Workspace.presign_many>`."""
        return builtins.list(
            await self._call(self.workspace.presign_many, keys, method, expires_in)
        )

    async def credentials(self) -> S3Credentials:
        """A valid frozen snapshot (refreshed in a worker thread when needed)."""
        return await self._call(self.workspace.credentials)


class AsyncClient:
    """A :class:`~sts_bridge.Client` whose calls that reach a server are coroutines."""

    def __init__(self, client: Client, *, executor: cf.Executor | None = None) -> None:
        self.client = client
        self._executor = executor

    def __repr__(self) -> str:
        return f"AsyncClient({self.client!r})"

    async def close(self) -> None:
        """:meth:`Client.close <sts_bridge.Client.close>` in a worker thread."""
        await run_cancellable(self._executor, lambda _cancelled: self.client.close())

    aclose = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def workspaces(self) -> list[str]:
        return await run_cancellable(self._executor, lambda _c: self.client.workspaces())

    async def workspace(self, name: str | None = None) -> AsyncWorkspace:
        """The :class:`AsyncWorkspace` ``name`` (default: the client's default workspace)."""
        ws = await run_cancellable(self._executor, lambda _c: self.client.workspace(name))
        return AsyncWorkspace(ws, executor=self._executor)


def _guarded(progress: ProgressCallback | None, cancelled: threading.Event) -> ProgressCallback:
    """A progress callback that stops the transfer once ``cancelled`` is set."""

    def report(done: int, total: int | None) -> None:
        if cancelled.is_set():
            raise Cancelled()
        if progress is not None:
            progress(done, total)

    return report
