"""Many small PUTs in flight at once, from the event loop that asks for them.

fsspec's ``pipe`` of many small objects (a folder of results, Zarr's small
chunks) is a batch of PUTs of a few KiB each. On threads, each request
waits for its thread to get the GIL back, and the store spends more CPU per
request when only a few arrive together; here every PUT of a batch is a
coroutine on the caller's event loop, up to :data:`IN_FLIGHT` at once over
kept-alive connections (``bench/datastack.py``, 500 x 16 KiB: 1.03-1.12x
obstore's time, 1.40x with 16 threads; docs/datastack.md).

Only the first attempt of each PUT is made here, and only the plain case:

- a direct connection: no proxy in the environment for the endpoint, and
  TLS verified by the transport's CA rule (``verify`` a CA file or folder,
  else the system's CAs, as urllib3 loads them); with ``verify=False`` or
  a proxy every PUT takes the threads' way;
- a body of at most :data:`~sts_bridge.s3.transport.MIN_PROGRESS` bytes, so
  the whole exchange must end within one stall timeout (the transport's
  stall rule: that many bytes per stall timeout);
- an answer ``200`` with a plain head (CRLF lines, ``Content-Length``, no
  ``Transfer-Encoding``).

Anything else (a refused connection, a TLS failure, a stall, another status:
errors, throttling, refused credentials; an odd answer) hands the PUT to the
caller's ``fallback``, :meth:`~sts_bridge.s3.objects.ObjectIO.put` on its
threads (retries, new credentials, the error mapper), which sends it again:
a PUT of the same bytes to the same key stores the same object. Nothing is
logged here but the outcome of a batch; no header is.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sts_bridge.s3.signed_http import S3Http, strip_etag
from sts_bridge.s3.signer import Signer
from sts_bridge.s3.transport import MIN_PROGRESS, parse_headers, proxy_for
from sts_bridge.s3.upload import SHA256_METADATA

if TYPE_CHECKING:
    import ssl

__all__ = ["IN_FLIGHT", "SMALLEST_FALLBACK_BODY", "BatchPuts", "in_flight_cap"]

log = logging.getLogger("sts_bridge.s3.batch_puts")

#: PUTs of one batch in flight at most (and connections kept per endpoint):
#: radosgw spends least per request with hundreds together (128: 0.98x
#: obstore, 256: 0.87x, 500: 0.85x; docs/datastack.md).
IN_FLIGHT = 256
#: Bodies this large or larger take the threads' way (see the module's docstring).
SMALLEST_FALLBACK_BODY = MIN_PROGRESS + 1
#: Seconds a signer is used before it is asked for again (on a thread: a
#: refresh of the credentials may block); a snapshot is good for at least
#: the credentials' mandatory refresh window (10 s for 60 s credentials).
_SIGNER_AGE = 5.0
#: The longest head of an answer read (StreamReader's limit).
_HEAD_LIMIT = 64 * 1024


def in_flight_cap() -> int:
    """:data:`IN_FLIGHT`, or fewer where few files may be open: an eighth of the
    soft limit of open files (fsspec's rule for its batches), at least 16."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module: Windows
        return IN_FLIGHT
    if soft == resource.RLIM_INFINITY:
        return IN_FLIGHT
    return max(16, min(IN_FLIGHT, soft // 8))


class _NotPlain(Exception):
    """The answer is not a plain ``200``: the PUT takes the threads' way."""


#: What ends a PUT here without storing it: ssl.SSLError is an OSError,
#: asyncio.IncompleteReadError an EOFError, a Content-Length too big for int() a ValueError.
_NOT_STORED = (
    OSError,
    EOFError,
    asyncio.TimeoutError,
    asyncio.LimitOverrunError,
    ValueError,
    _NotPlain,
)


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class BatchPuts:
    """The event-loop PUTs of one bucket's :class:`~sts_bridge.s3.signed_http.S3Http`.

    :param http: signs (its credentials) and names the endpoint and CA rule.
    :param threads: where a signer is asked for (a refresh may block).
    """

    def __init__(self, http: S3Http, threads: Callable[[], Any]) -> None:
        self._http = http
        self._threads = threads
        self._lock = threading.Lock()
        # Idle connections of one event loop (connections cannot move between loops).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._signer: tuple[float, Signer] | None = None
        self._signer_pending: asyncio.Future[Signer] | None = None
        self._tls: tuple[Any, ssl.SSLContext] | None = None

    async def put_each(
        self,
        items: Sequence[tuple[str, bytes]],
        fallback: Callable[[int], Awaitable[Any]],
        *,
        limit: int | None = None,
        stop_at_error: bool = False,
    ) -> list[Any]:
        """PUT ``body`` at ``full_key`` for every ``(full_key, body)``: the ETag
        of each, in the items' order, or what ``fallback(i)`` returned (or
        raised) for an item not stored here.

        At most ``limit`` (``None`` or below 1: :func:`in_flight_cap`, also
        the most) in flight. With ``stop_at_error`` no item starts after one
        fails, and the first exception is raised once those in flight are
        done; otherwise each item's exception is its result.
        """
        results: list[Any] = [None] * len(items)
        if not items:
            return results
        cap = in_flight_cap()
        most = min(limit if limit is not None and limit > 0 else cap, cap)
        direct = self._direct()
        failed: list[Exception] = []
        next_index = iter(range(len(items)))
        handed_over = 0

        async def work() -> None:
            while not (stop_at_error and failed):
                i = next(next_index, None)
                if i is None:
                    return
                full_key, body = items[i]
                try:
                    etag = await self._put(full_key, body) if direct else None
                    if etag is None:
                        nonlocal handed_over
                        handed_over += 1
                        etag = await fallback(i)
                    results[i] = etag
                except Exception as exc:  # fallback's: the item's answer
                    results[i] = exc
                    if stop_at_error:
                        failed.append(exc)

        await asyncio.gather(*(work() for _ in range(min(most, len(items)))))
        if handed_over:
            log.debug("%d of %d PUTs took the threads' way", handed_over, len(items))
        if failed:
            raise failed[0]
        return results

    def _direct(self) -> bool:
        """Whether this endpoint is reached without a proxy, TLS verified."""
        parts = urlsplit(self._http.ws.endpoint_url)
        if parts.scheme == "https" and self._http.ws.verify is False:
            return False
        return parts.scheme in ("http", "https") and proxy_for(self._http.ws.endpoint_url) is None

    async def _put(self, full_key: str, body: bytes) -> str | None:
        """One PUT on a connection of this loop: its ETag, or ``None`` when the
        PUT is not done here (not sent, or its answer not a plain ``200``)."""
        if len(body) >= SMALLEST_FALLBACK_BODY:
            return None
        try:
            signer = await self._current_signer()
        except Exception:  # credentials that cannot be had: the threads' way says why
            return None
        digest = hashlib.sha256(body).hexdigest()
        url, signed = signer.sign_request(
            "PUT",
            full_key,
            headers={f"x-amz-meta-{SHA256_METADATA}": digest},
            payload_sha256=digest,
        )
        head = _request_head(url[len(signer.base_url) :], signer.host, signed, len(body))
        if head is None:
            return None
        used: list[_Connection] = []
        try:
            return await asyncio.wait_for(
                self._exchange(signer.base_url, head + body, used), self._http.stall
            )
        except _NOT_STORED as exc:  # the threads' way sends it again and says what failed
            if isinstance(exc, _NotPlain):
                self._signer = None  # refused credentials, maybe: ask again
            return None
        finally:  # not kept: failed, cancelled (half a request, maybe), or closed by its answer
            for conn in used:
                conn.writer.close()

    async def _exchange(self, base_url: str, request: bytes, used: list[_Connection]) -> str:
        """Send ``request`` and read its answer: the ETag of a plain ``200``.
        The connection goes back to the idle ones when its answer allows it,
        else it stays in ``used`` for the caller to close."""
        conn = self._take() or await self._connect(base_url)
        used.append(conn)
        conn.writer.write(request)
        etag, kept = await _read_answer(conn.reader)
        if kept:
            used.remove(conn)
            self._idle.append(conn)
        return etag

    def _take(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop_idle()
            self._loop = loop
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.writer.close()
        return None

    async def _connect(self, base_url: str) -> _Connection:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        if parts.scheme == "https":
            reader, writer = await asyncio.open_connection(
                host,
                parts.port or 443,
                ssl=self._tls_context(),
                server_hostname=host,
                limit=_HEAD_LIMIT,
            )
        else:
            reader, writer = await asyncio.open_connection(
                host, parts.port or 80, limit=_HEAD_LIMIT
            )
        return _Connection(reader, writer)

    def _tls_context(self) -> ssl.SSLContext:
        """The transport's CA rule (urllib3's context, its CAs loaded as urllib3 loads them)."""
        verify = self._http.ws.verify
        if self._tls is None or self._tls[0] != verify:
            import ssl

            from urllib3.util.ssl_ import create_urllib3_context

            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            if isinstance(verify, str):
                if os.path.isdir(verify):
                    context.load_verify_locations(capath=verify)
                else:
                    context.load_verify_locations(cafile=verify)
            else:
                context.load_default_certs()
            context.check_hostname = True
            self._tls = (verify, context)
        return self._tls[1]

    async def _current_signer(self) -> Signer:
        now = time.monotonic()
        current = self._signer
        if current is not None and now - current[0] < _SIGNER_AGE:
            return current[1]
        pending = self._signer_pending
        if pending is None or pending.done():
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._threads(), self._http.signer)
            self._signer_pending = pending
        signer = await asyncio.shield(pending)
        self._signer = (time.monotonic(), signer)
        return signer

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        loop = self._loop
        for conn in idle:
            _close_on(loop, conn)

    def close(self) -> None:
        """Close the idle connections (on their loop's thread when it runs elsewhere)."""
        with self._lock:
            self._drop_idle()
            self._loop = None


def _close_on(loop: asyncio.AbstractEventLoop | None, conn: _Connection) -> None:
    if loop is None or loop.is_closed():
        return  # its transports went with the loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop or not loop.is_running():
        conn.writer.close()  # its loop closes the socket when it runs again
    else:
        loop.call_soon_threadsafe(conn.writer.close)


def _request_head(target: str, host: str, headers: dict[str, str], length: int) -> bytes | None:
    """The request's head, or ``None`` when a value could break its lines."""
    if "\r" in target or "\n" in target or " " in target:
        return None
    lines = [f"PUT {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            return None
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


async def _read_answer(reader: asyncio.StreamReader) -> tuple[str, bool]:
    """The ETag of a plain ``200`` answer read to its end, and whether its
    connection may carry the next request; :class:`_NotPlain` otherwise."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_lines = head.partition(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or rest.split(b" ", 1)[0] != b"200":
        raise _NotPlain("not 200")
    message = parse_headers(io.BytesIO(header_lines))
    if message.defects or "Transfer-Encoding" in message:
        raise _NotPlain("odd head")
    lengths = message.get_all("Content-Length") or []  # exactly one, digits only
    if len(lengths) != 1 or not lengths[0].strip().isdigit():
        raise _NotPlain("no single Content-Length")
    length = int(lengths[0])
    if length > MIN_PROGRESS:
        raise _NotPlain("a long answer to a PUT")
    if length:
        await reader.readexactly(length)
    connection = (message.get("Connection") or "").lower()
    kept = version == b"HTTP/1.1" and "close" not in connection
    return strip_etag(message.get("ETag")), kept
