"""HTTP for the S3 engine: urllib3, configured once for the one storage endpoint.

The engine signs every request itself (:mod:`sts_bridge.s3.signer`) and
retries by its own policy (:class:`~sts_bridge.s3.signed_http.S3Http`).
What it needs from HTTP is built here on urllib3, the way botocore's
``URLLib3Session`` builds it:

- one connection pool for the endpoint's scheme, host and port, reached
  through a ``ProxyManager`` when the environment names a proxy for it
  (:func:`proxy_for`: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` and
  ``NO_PROXY``, lower case too, read as requests and botocore read them);
- urllib3's retries and redirects off (``Retry(False)``): the engine's
  ``RetryPolicy`` is the one policy;
- a timeout per socket operation (connect, each send, each read) equal to
  the stall timeout, and request bodies sent in blocks of at most
  :data:`SEND_BLOCK` bytes, each its own ``sendall``: a request fails as
  stalled when no block moves for that long, however big the body (one
  ``sendall`` of a whole part would have to finish within the timeout); a
  body of one block goes in the head's ``sendall`` (one system call, one
  segment for the store to read);
- a body that is a range of an open file (:class:`FileRange`, an upload's
  part) is read while it is sent, never held whole in memory: with
  ``sendfile(2)`` on a plain connection (the kernel sends from the page
  cache: no copy through Python, no part-sized buffer), else (TLS) block by
  block through one reused buffer per thread; a wait for the socket is the
  stall timeout as for any send, and a file that ends early raises
  :class:`SourceShrank` (the request is never completed with fewer bytes);
- ``Expect: 100-continue`` on PUT bodies of :data:`EXPECT_CONTINUE_MIN`
  bytes or more (botocore's ``AWSConnection``): the head goes first, the
  body follows a ``100 Continue`` (or one second of silence); a final
  answer before the body (a 403 for credentials the store refuses) is the
  answer, the body is never sent and the connection is closed after it;
- answers read with ``preload_content=False``, ``decode_content=False``
  (bytes as stored) and ``enforce_content_length``; a connection goes back
  to the pool only when its answer was read to its end and nothing more
  is waiting on it, otherwise it is closed.

Failures come out as ``OSError`` subclasses, whatever urllib3 raised:
:class:`ConnectFailed` (the request never reached the store: refused,
unreachable, proxy, TLS handshake), ``TimeoutError`` (it stalled),
:class:`ProtocolError` (a ``ConnectionError``: the answer broke off or is
not HTTP/1.1). The TLS cause stays chained (``__cause__``) for
:func:`sts_bridge.s3.errors.tls_refused`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote, urlsplit

from sts_bridge.errors import TransferError

if TYPE_CHECKING:
    import urllib3

__all__ = [
    "ANSWER_LIMIT",
    "EXPECT_CONTINUE_MIN",
    "MIN_PROGRESS",
    "SEND_BLOCK",
    "Answer",
    "BodyPieces",
    "ConnectFailed",
    "ConnectionPools",
    "FileRange",
    "PoolClosed",
    "ProtocolError",
    "SourceShrank",
    "StoreConnection",
    "parse_headers",
    "proxy_for",
]

log = logging.getLogger("sts_bridge.s3.transfers")

MiB = 1024 * 1024
#: Largest piece of a request body handed to one ``sendall`` (the stall
#: timeout bounds each one): 256 KiB moves within 25 s down to about 10 KiB/s.
SEND_BLOCK = 256 * 1024
#: PUT bodies this large or larger wait for ``100 Continue`` (botocore: 1 MiB).
EXPECT_CONTINUE_MIN = 1 * MiB
#: Seconds to wait for ``100 Continue`` before sending the body anyway (RFC 9110, botocore).
CONTINUE_WAIT = 1.0
#: Longest answer body read whole by default: S3's XML answers are far
#: smaller; a store announcing or sending more is refused, not buffered.
ANSWER_LIMIT = 64 * MiB
#: An answer read whole must bring this many bytes per stall timeout (a
#: trickle slower than that is a stall: 64 KiB per 25 s is 2.6 KB/s).
MIN_PROGRESS = 64 * 1024
#: Request bodies up to this size are not waited for after ``sendall`` (a
#: head is a few KiB: head and body stay under MIN_PROGRESS).
SMALL_REQUEST_BODY = MIN_PROGRESS // 2
#: Read-block size of :meth:`Answer.read`.
_READ_BLOCK = 1 * MiB
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


class ConnectFailed(OSError):
    """No connection to the storage endpoint (refused, unreachable, proxy, TLS handshake)."""


class ProtocolError(ConnectionError):
    """The store's answer broke off, or is not HTTP/1.1."""


class PoolClosed(ConnectionError):
    """The pool was closed (``close()`` on another thread) before this request
    took a connection from it; nothing was sent."""


class SourceShrank(TransferError):
    """A :class:`FileRange` body's file ended before the range did (it shrank
    since the request was made); not an ``OSError``: retrying would not help."""


@dataclass(frozen=True)
class FileRange:
    """A request body that is ``length`` bytes of the open file ``fd`` from
    ``offset``, read while it is sent (see the module docstring). The caller
    keeps ``fd`` open until the request is answered."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, or ``None``.

    ``<scheme>_proxy`` then ``all_proxy`` (either case; a value without a
    scheme is ``http://``), unless ``no_proxy`` matches the host, as
    ``urllib.request`` reads them for requests and the generated API client.
    """
    if not any(name.lower() in _PROXY_VARIABLES for name in os.environ):
        return None  # the usual case, without importing urllib.request
    from urllib.request import (  # type: ignore[attr-defined]  # public, untyped in typeshed
        getproxies_environment,
        proxy_bypass_environment,
    )

    proxies = getproxies_environment()
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass_environment(parts.netloc, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


# ----------------------------------------------------------------- importing urllib3
_IMPORT_LOCK = threading.RLock()  # re-entered if urllib3 asks urllib3.http2 for a name


def _import_urllib3() -> None:
    """Import urllib3 without running ``urllib3.http2``'s ``__init__`` yet.

    ``urllib3.connection`` imports ``urllib3.http2.probe``, so every import
    of urllib3 runs the ``urllib3.http2`` package's ``__init__``, whose one
    import, ``importlib.metadata`` (with ``zipfile``, ``shutil``, ``csv``,
    ``tempfile``), costs a warm tiny download about 8 ms of CPU and serves
    only ``inject_into_urllib3()`` (HTTP/2, which the engine never uses).
    When urllib3 is not imported yet, ``urllib3.http2`` starts as its
    package without its ``__init__`` run: submodules (``probe``) import as
    usual, and the first other name asked of it runs the real ``__init__``
    in place, so code that uses ``urllib3.http2`` gets the real module.
    Anything unexpected (urllib3 already imported, another layout) leaves
    the import as it is.
    """
    with _IMPORT_LOCK:
        deferred = "urllib3" not in sys.modules and "urllib3.http2" not in sys.modules
        if deferred:
            _defer_http2_init()
        import urllib3

        if deferred and "http2" not in vars(urllib3) and "urllib3.http2" in sys.modules:
            # the import system binds a submodule to its parent only when it runs it
            urllib3.http2 = sys.modules["urllib3.http2"]  # type: ignore[attr-defined]


def _defer_http2_init() -> None:
    import importlib.machinery
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("urllib3")  # finds the package, does not run it
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "http2")
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        return
    submodules = {name[:-3] for name in os.listdir(folder) if name.endswith(".py")}
    module = types.ModuleType("urllib3.http2")
    module.__file__ = init
    module.__path__ = [folder]
    module.__spec__ = importlib.machinery.ModuleSpec(
        "urllib3.http2", None, origin=init, is_package=True
    )
    module.__spec__.submodule_search_locations = [folder]

    def run_init(name: str) -> Any:
        if name in submodules:
            raise AttributeError(name)  # the import system then imports the submodule
        with _IMPORT_LOCK:
            if module.__dict__.get("__getattr__") is run_init:
                real = importlib.util.spec_from_file_location(
                    "urllib3.http2", init, submodule_search_locations=[folder]
                )
                if real is None or real.loader is None:
                    raise AttributeError(name)
                del module.__dict__["__getattr__"]
                module.__spec__, module.__loader__ = real, real.loader
                real.loader.exec_module(module)
        return getattr(module, name)

    module.__dict__["__getattr__"] = run_init
    sys.modules["urllib3.http2"] = module


# ----------------------------------------------------------------- answer heads
@functools.cache
def _plain_head() -> Any:
    """A head of plain ``name: value`` lines (RFC 9110 token names, values without
    CR or LF, CRLF line ends) up to its blank line: the whole head of every S3
    answer. Anything else (folded lines, bare LF, a line that is no header)
    goes to ``http.client``'s own parser."""
    import re

    return re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n)*\r\n\Z")


def parse_headers(fp: Any, _class: Any = None) -> Any:
    """``http.client.parse_headers``, without the ``email`` package for a plain head.

    ``http.client`` hands the head's lines to ``email``'s feed parser, about
    a fifth of the client CPU of a small PUT. A plain head (:func:`_plain_head`)
    is split here into the same message: each line stored raw as
    ``email``'s compat32 policy stores it (the name before the first colon,
    the value without its leading blanks and its CRLF); any other head, or
    another message class, is given to ``http.client`` as read. The line
    length and count limits are ``http.client``'s (its ``_read_headers``).
    """
    import http.client

    if _class is not None and _class is not http.client.HTTPMessage:
        return http.client.parse_headers(fp, _class)
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]
    head = b"".join(lines)
    if _plain_head().match(head) is None:
        import email.parser

        return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(
            head.decode("iso-8859-1")
        )
    message = http.client.HTTPMessage()
    for line in lines[:-1]:
        name, _, value = line.decode("iso-8859-1").partition(":")
        message.set_raw(name, value[:-2].lstrip(" \t"))
    message.set_payload("")  # as the feed parser leaves it: an empty body
    return message


def _with_header_parser(begin: Callable[..., None], parse: Callable[..., Any]) -> Any:
    """``http.client.HTTPResponse.begin`` (status line, framing, keep-alive: the
    standard library's own code) calling ``parse`` for the head's lines; the
    original when it does not call ``parse_headers`` by that name, or when
    ``http.client`` has no ``_read_headers`` (which :func:`parse_headers` reads
    the lines with) in this Python."""
    import http.client
    import types

    if "parse_headers" not in begin.__code__.co_names or not callable(
        getattr(http.client, "_read_headers", None)
    ):
        return begin
    names = dict(vars(http.client))
    names["parse_headers"] = parse
    return types.FunctionType(
        begin.__code__, names, begin.__name__, begin.__defaults__, begin.__closure__
    )


# ----------------------------------------------------------------- connections
class _ExpectContinue:
    """``Expect: 100-continue`` for urllib3 connections (botocore's ``AWSConnection``).

    urllib3 sends the head in ``endheaders()`` and then the body block by
    block through ``send()``: the wait for ``100 Continue`` goes between the
    two. A final answer instead makes every ``send()`` of this request a
    no-op and is handed to ``getresponse()`` (its status line already read).
    """

    body_skipped = False
    raw_response: Any = None
    response_class: Any = None
    _expect = False
    #: The head of a request whose whole body is one small block: held back and
    #: sent together with that block, one ``sendall`` and (on loopback or a
    #: fast link) one segment for the store to read instead of two.
    _hold_head = False
    _held: bytes | None = None
    #: Whether the request's body is at most SMALL_REQUEST_BODY (see getresponse).
    _small = False

    def request(
        self, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any
    ) -> None:
        self.body_skipped = False
        self.raw_response = None
        self.response_class = functools.partial(self._kept, _pool_classes()["answer"])
        self._expect = bool(headers) and headers.get("Expect") == "100-continue"
        file_body = body if isinstance(body, FileRange) else None
        one_block = isinstance(body, (bytes, bytearray, memoryview)) and len(body) <= SEND_BLOCK
        self._small = body is None or (one_block and len(body) <= SMALL_REQUEST_BODY)
        self._hold_head = one_block and len(body) > 0 and not self._expect
        self._held = None
        try:
            # a FileRange goes after the head (and the wait for 100 Continue),
            # sent here rather than by urllib3, which would read it in copies
            super().request(  # type: ignore[misc]
                method, url, None if file_body is not None else body, headers, **kw
            )
            if self._held is not None:  # no block came to carry it
                held, self._held = self._held, None
                super().send(held)  # type: ignore[misc]
        finally:
            self._expect = self._hold_head = False
            self._held = None
        if file_body is not None and not self.body_skipped:
            _send_file_range(self.sock, file_body)  # type: ignore[attr-defined]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        super()._send_output(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
        if self._expect:
            from urllib3.util import wait_for_read

            sock = self.sock  # type: ignore[attr-defined]
            if wait_for_read(sock, CONTINUE_WAIT):
                self._read_interim(sock)

    def _read_interim(self, sock: Any) -> None:
        fp = sock.makefile("rb", 0)  # unbuffered: bytes after the interim answer stay unread
        try:
            line = fp.readline(65537)
            parts = line.split(None, 2)
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == b"100":
                for _ in range(100):  # its headers, if any, up to the blank line
                    if fp.readline(65537) in (b"\r\n", b"\n", b""):
                        break
                return
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
                reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
                status = (parts[0].decode("ascii", "replace"), int(parts[1]), reason)
                early = _pool_classes()["early answer"]
                self.response_class = functools.partial(
                    self._kept, functools.partial(early, status=status)
                )
                self.body_skipped = True
            # anything else: getresponse() reads on and fails on it
        finally:
            fp.close()

    def _kept(self, make: Any, *args: Any, **kwargs: Any) -> Any:
        """The ``http.client`` answer, kept as ``raw_response`` for reads straight
        into the caller's buffer (urllib3's ``readinto`` reads a copy)."""
        self.raw_response = make(*args, **kwargs)
        return self.raw_response

    def send(self, data: Any) -> None:
        if self.body_skipped:
            return  # the store answered before the body: it is not sent
        if self._hold_head:  # the head: it goes with the body's one block
            self._hold_head = False
            self._held = bytes(data)
            return
        if self._held is not None:
            data, self._held = self._held + bytes(data), None
        super().send(data)  # type: ignore[misc]

    def getresponse(self) -> Any:
        # A small request is a stall when it has not arrived within the read
        # timeout anyway (head and body are less than MIN_PROGRESS, the least a
        # link must move per stall timeout): no wait for its delivery.
        if not self.body_skipped and not self._small:
            _await_delivery(self.sock, self.timeout)  # type: ignore[attr-defined]
        return super().getresponse()  # type: ignore[misc]


_SENDFILE_REFUSED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTSOCK}
)
_send_buffers = threading.local()


def _send_file_range(sock: Any, body: FileRange) -> None:
    """Send ``body`` on ``sock``: ``sendfile(2)`` on a plain socket, else (TLS,
    or a file ``sendfile`` refuses) read block by block into a reused buffer.
    Raises ``TimeoutError`` when no byte moves for the socket's timeout and
    :class:`SourceShrank` when the file ends before the range does."""
    import socket
    import ssl

    offset, end = body.offset, body.offset + body.length
    if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
        offset = _sendfile(sock, body.fd, offset, end)
    if offset >= end:
        return
    buf: memoryview | None = getattr(_send_buffers, "buf", None)
    if buf is None:
        buf = _send_buffers.buf = memoryview(bytearray(SEND_BLOCK))
    while offset < end:
        n = os.preadv(body.fd, [buf[: min(SEND_BLOCK, end - offset)]], offset)
        if not n:
            raise SourceShrank("the file shrank while it was being uploaded")
        sock.sendall(buf[:n])
        offset += n


def _sendfile(sock: Any, fd: int, offset: int, end: int) -> int:
    """``sendfile(2)`` from ``offset`` to ``end``; returns where it stopped: ``end``,
    or the first offset when the kernel refuses ``sendfile`` for this file."""
    stall = sock.gettimeout()
    out = sock.fileno()
    start = offset
    while offset < end:
        try:
            sent = os.sendfile(out, fd, offset, end - offset)
        except BlockingIOError:  # the send buffer is full (a socket with a timeout)
            _wait_writable(sock, stall)
            continue
        except OSError as exc:
            if offset == start and exc.errno in _SENDFILE_REFUSED:
                return offset  # not for this file: the caller reads and sends
            raise
        if not sent:
            raise SourceShrank("the file shrank while it was being uploaded")
        offset += sent
    return offset


def _wait_writable(sock: Any, stall: float | None) -> None:
    """Wait until ``sock`` takes bytes again; ``TimeoutError`` when its send queue
    did not shrink for ``stall`` seconds.

    A full socket is reported writable again only once much of its buffer
    has drained (Linux: half of what is queued): on a slow link that takes
    longer than the stall timeout while bytes move all along, so progress is
    read from the queue itself where the kernel tells it (:func:`_send_queue`).
    """

    from urllib3.util import wait_for_write

    queued = _send_queue(sock) if stall is not None else None
    if queued is None:
        if not wait_for_write(sock, timeout=stall):
            raise TimeoutError("timed out")
        return
    assert stall is not None
    last, since = queued(), time.monotonic()
    while not wait_for_write(sock, timeout=min(0.25, stall)):
        now, left = time.monotonic(), queued()
        if left < last:
            last, since = left, now
        elif now - since >= stall:
            raise TimeoutError("timed out")


def _send_queue(sock: Any) -> Callable[[], int] | None:
    """A function telling how many bytes ``sock``'s kernel still holds to send
    (sent but not acknowledged included: Linux ``TIOCOUTQ``), or ``None`` where
    the kernel cannot tell; the function answers 0 once it no longer can."""
    try:
        import fcntl
        import struct
        import termios

        request = termios.TIOCOUTQ
        fd = sock.fileno()
        fcntl.ioctl(fd, request, b"\0\0\0\0")
    except (ImportError, AttributeError, OSError):
        return None

    def queued() -> int:
        try:
            (count,) = struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))
        except OSError:
            return 0
        return int(count)

    return queued


def _await_delivery(sock: Any, stall: Any) -> None:
    """Wait while the kernel still sends the request's last bytes, and they move.

    ``sendall`` returns once the bytes are in the socket's send buffer: on a
    slow link megabytes may still be on their way, and the store answers
    only after the last of them. The answer's read timeout starts here, so
    that it means "nothing moved" too, not "the buffer did not drain within
    it". Linux only (``TIOCOUTQ``: bytes not yet acknowledged); returns at
    once when an answer is already there, the queue is empty, or it stopped
    shrinking for ``stall`` seconds (the read then times out as a stall).
    Requests with a body of at most :data:`SMALL_REQUEST_BODY` skip it.
    """
    if sock is None or not isinstance(stall, (int, float)):
        return
    queued = _send_queue(sock)
    if queued is None:
        return
    from urllib3.util import wait_for_read

    last = -1
    since = time.monotonic()
    while True:
        left = queued()
        if left <= 0:
            return
        now = time.monotonic()
        if last < 0 or left < last:
            last, since = left, now
        elif now - since >= stall:
            return
        if wait_for_read(sock, timeout=min(0.25, stall)):
            return  # the store answered (early): read it


class _CleanReturn:
    """Pools that take a connection back only when it is clean.

    urllib3 gives a connection back by itself once an answer was read to
    its end; a connection whose request body was never sent, or with bytes
    waiting after the answer (which the next request would read as its
    answer), is closed instead.
    """

    def _put_conn(self, conn: Any) -> None:
        from urllib3.util import wait_for_read

        if conn is not None:
            sock = getattr(conn, "sock", None)
            if getattr(conn, "body_skipped", False) or (
                sock is not None and wait_for_read(sock, timeout=0.0)
            ):
                conn.close()
        super()._put_conn(conn)  # type: ignore[misc]


@functools.cache
def _pool_classes() -> dict[str, Any]:
    """urllib3's pools with the behaviour above, made on first use: importing
    urllib3 (and ``http.client``, ``ssl``) costs a command that sends no
    request (``presign``) tens of milliseconds."""
    import http.client

    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class StoreAnswer(http.client.HTTPResponse):
        """``http.client``'s answer, its head parsed by :func:`parse_headers`."""

        begin = _with_header_parser(http.client.HTTPResponse.begin, parse_headers)

        def readinto1(self, buffer: Any) -> int:
            """``read1`` into ``buffer``: at most one system call, so a reader
            sees every trickle of bytes (``readinto`` waits until the buffer is
            full); 0 at the end of the body, or where it breaks off. The
            bookkeeping is ``read1``'s own (``length``, ``_close_conn``)."""
            if self.fp is None or self._method == "HEAD":  # type: ignore[attr-defined]
                return 0
            if self.chunked:
                data = self.read1(len(buffer))
                buffer[: len(data)] = data
                return len(data)
            view = memoryview(buffer)
            if self.length is not None and len(view) > self.length:
                view = view[: self.length]
            n: int = self.fp.readinto1(view)
            if not n and len(view):
                self._close_conn()  # type: ignore[attr-defined]
            elif self.length is not None:
                self.length -= n
                if not self.length:
                    self._close_conn()  # type: ignore[attr-defined]
            return n

    class EarlyAnswer(StoreAnswer):
        """An answer whose status line was read while waiting for ``100 Continue``."""

        def __init__(self, sock: Any, *, status: tuple[str, int, str], **kwargs: Any) -> None:
            super().__init__(sock, **kwargs)
            self._early_status: tuple[str, int, str] | None = status

        def _read_status(self) -> tuple[str, int, str]:
            if self._early_status is not None:
                status, self._early_status = self._early_status, None
                return status
            return super()._read_status()  # type: ignore[misc,no-any-return]

    class StoreHTTPConnection(_ExpectContinue, HTTPConnection):
        pass

    class StoreHTTPSConnection(_ExpectContinue, HTTPSConnection):
        pass

    class StoreHTTPPool(_CleanReturn, HTTPConnectionPool):
        ConnectionCls = StoreHTTPConnection

    class StoreHTTPSPool(_CleanReturn, HTTPSConnectionPool):
        ConnectionCls = StoreHTTPSConnection

    return {
        "http": StoreHTTPPool,
        "https": StoreHTTPSPool,
        "answer": StoreAnswer,
        "early answer": EarlyAnswer,
    }


# ----------------------------------------------------------------- answers
class _Progress:
    """The stall rule of a body read whole: a trickle of a few bytes at a time
    never trips the per-read timeout, so every :data:`MIN_PROGRESS` bytes must
    arrive within the stall timeout (``None``: no rule)."""

    __slots__ = ("_got", "_stall", "_start")

    def __init__(self, stall: float | None) -> None:
        self._stall = stall
        self._start = time.monotonic()
        self._got = 0

    def add(self, n: int) -> None:
        """``n`` more bytes arrived; raises :class:`TimeoutError` on a trickle."""
        self._got += n
        now = time.monotonic()
        if self._got >= MIN_PROGRESS:
            self._start, self._got = now, 0
        elif self._stall is not None and now - self._start > self._stall:
            raise TimeoutError(f"no progress: less than {MIN_PROGRESS} bytes in {self._stall:g} s")


class Answer:
    """One answer: ``status``, ``headers`` (case-insensitive), the body read whole
    (:meth:`read`, ``data``) or streamed (:meth:`readinto`); :meth:`release_conn`
    gives the connection back when it is clean, closes it otherwise."""

    __slots__ = ("_body_skipped", "_data", "_raw", "_resp", "_stall", "headers", "status")

    def __init__(
        self, resp: urllib3.BaseHTTPResponse, *, body_skipped: bool, stall: float | None = None
    ) -> None:
        self._resp: urllib3.BaseHTTPResponse | None = resp
        self.status = resp.status
        self.headers = resp.headers
        self._body_skipped = body_skipped
        self._stall = stall
        self._data: bytes | None = None
        # http.client's answer under urllib3's (same bytes: decode_content is off)
        self._raw: Any = getattr(resp.connection, "raw_response", None)

    @property
    def data(self) -> bytes:
        """The whole body (read on first use with :meth:`read`, at most
        :data:`ANSWER_LIMIT` bytes)."""
        if self._data is None:
            self._data = self.read(ANSWER_LIMIT)
        return self._data

    def read(self, limit: int | None) -> bytes:
        """The whole body (kept as ``data``), refused (:class:`ProtocolError`) when
        longer than ``limit`` bytes (``None``: no limit)."""
        if self._data is not None:
            return self._data
        resp = self._live()
        announced = resp.length_remaining
        if announced == 0 and self._raw is not None:
            # An empty body (a PUT's or HEAD's answer): http.client ends the
            # answer at once; urllib3's read layers would find nothing more.
            self._end_empty(resp)
            self._data = b""
            return self._data
        if limit is not None and announced is not None and announced > limit:
            raise ProtocolError(f"the answer announces {announced} bytes, more than {limit}")
        if announced is not None and hasattr(self._raw, "readinto1"):
            self._data = self._read_announced(announced)
        else:  # chunked, or until the connection closes
            self._data = self._read_blocks(resp, limit)
        return self._data

    def _read_announced(self, size: int) -> bytes:
        """A body of an announced ``size``, read straight into one buffer that
        becomes the returned ``bytes`` (``io.BytesIO`` hands over its own buffer
        without a copy). Blocks read one by one and then joined cost a second
        buffer as large as the body, and fresh memory for each: reading 4 MiB
        Zarr chunks that way faulted in every page of the data again
        (docs/benchmark.md)."""
        buffer = io.BytesIO()
        buffer.seek(size - 1)
        buffer.write(b"\0")
        progress = _Progress(self._stall)
        got = 0
        with buffer.getbuffer() as view:
            while got < size:
                try:
                    n = self._raw.readinto1(view[got : got + _READ_BLOCK])
                except Exception as exc:
                    _reraise(exc)
                if not n:
                    raise ProtocolError(f"the answer broke off after {got} of {size} bytes")
                got += n
                progress.add(n)
        return buffer.getvalue()

    def _read_blocks(self, resp: urllib3.BaseHTTPResponse, limit: int | None) -> bytes:
        """A body of unknown length, block by block to its end."""
        parts = []
        got = 0
        progress = _Progress(self._stall)
        while True:
            try:
                block = resp.read1(_READ_BLOCK)
            except Exception as exc:
                _reraise(exc)
            if not block:
                break
            got += len(block)
            if limit is not None and got > limit:
                raise ProtocolError(f"the answer is longer than {limit} bytes")
            parts.append(block)
            progress.add(len(block))
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        """Up to ``len(buffer)`` bytes of the body into ``buffer``; 0 at its end.

        Read by ``http.client`` straight into ``buffer`` (its length rule:
        0 when the answer ends early, which the caller counts as broken).
        """
        resp = self._live()
        raw = self._raw
        try:
            if raw is None:
                return resp.readinto(buffer)
            n: int = raw.readinto(buffer)
            return n
        except Exception as exc:
            _reraise(exc)

    def release_conn(self) -> None:
        """Back to the pool when the body was read to its end (the pool checks the
        connection is clean, see :class:`_CleanReturn`); closed otherwise. Safe to
        call more than once."""
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if not _ended(resp) and resp.length_remaining == 0 and not self._body_skipped:
            self._end_empty(resp)  # an empty body (HEAD, 204, Content-Length: 0)
        if not _ended(resp):
            resp.close()  # closes the connection too; the pool opens a new one
        resp.release_conn()

    def _end_empty(self, resp: Any) -> None:
        """End an answer whose body is announced empty, keeping its connection
        usable; on any failure it stays unended, so it is closed, not reused."""
        with contextlib.suppress(Exception):
            if self._raw is not None:
                self._raw.read()  # reads nothing: http.client ends the answer
            else:
                resp.read()

    def close(self) -> None:
        """Drop the connection (a body left unread cannot be skipped cheaply)."""
        if self._resp is not None:
            self._resp.close()

    def _live(self) -> urllib3.BaseHTTPResponse:
        if self._resp is None:
            raise ProtocolError("the answer's connection was already given back")
        return self._resp


# ----------------------------------------------------------------- the pool
class StoreConnection:
    """Persistent connections to the scheme, host and port of ``base_url``.

    :param maxsize: idle connections kept (more may be open at once; the
        surplus is closed when given back).
    :param stall_timeout: seconds any one socket operation (connect, send
        of one block, read) may wait.
    :param verify: TLS verification: ``True`` (the system's CAs), a CA
        bundle file or directory, or ``False`` (urllib3 warns
        ``InsecureRequestWarning``).
    """

    def __init__(
        self, base_url: str, *, maxsize: int, stall_timeout: float, verify: bool | str = True
    ) -> None:
        _import_urllib3()
        import urllib3

        parts = urlsplit(base_url)
        self.base_url = base_url
        self.stall_timeout = stall_timeout
        self.proxy = proxy_for(base_url)
        kwargs: dict[str, Any] = {
            "maxsize": maxsize,
            "block": False,
            "timeout": urllib3.Timeout(connect=stall_timeout, read=stall_timeout),
            "retries": urllib3.Retry(False, redirect=False),
        }
        if parts.scheme == "https":
            if verify is False:
                kwargs["cert_reqs"] = "CERT_NONE"
            else:
                kwargs["cert_reqs"] = "CERT_REQUIRED"
                if isinstance(verify, str):
                    key = "ca_cert_dir" if os.path.isdir(verify) else "ca_certs"
                    kwargs[key] = verify
        self._manager: urllib3.PoolManager | None = None
        self.closed = False
        # A forwarding proxy (plain http through an http proxy) takes absolute URLs.
        self._target_prefix = ""
        if self.proxy is None:
            pool_cls = _pool_classes()[parts.scheme]
            self._pool: Any = pool_cls(parts.hostname, parts.port, **kwargs)
        else:
            proxy = urlsplit(self.proxy)
            proxy_headers = None
            if proxy.username:
                proxy_headers = urllib3.make_headers(
                    proxy_basic_auth=f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
                )
            manager = urllib3.ProxyManager(self.proxy, proxy_headers=proxy_headers, **kwargs)
            classes = _pool_classes()
            manager.pool_classes_by_scheme = {"http": classes["http"], "https": classes["https"]}
            self._manager = manager
            self._pool = manager.connection_from_url(base_url)
            if parts.scheme == "http":
                self._target_prefix = base_url
            log.debug("the storage endpoint %s is reached through a proxy", base_url)

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | memoryview | FileRange | BodyPieces | None = None,
    ) -> Answer:
        """Send one request (``target``: path and query) and return its answer,
        the body unread."""
        out = dict(headers)
        blocks: Any = None
        if body is not None:
            size = len(body)
            out["Content-Length"] = str(size)
            if isinstance(body, FileRange):
                blocks = body  # sent by the connection (_ExpectContinue.request)
            else:
                blocks = (
                    _blocks(body) if size > SEND_BLOCK or isinstance(body, BodyPieces) else body
                )
            if method == "PUT" and size >= EXPECT_CONTINUE_MIN:
                out["Expect"] = "100-continue"
        try:
            resp = self._pool.urlopen(
                method,
                self._target_prefix + target,
                body=blocks,
                headers=out,
                retries=None,  # the pool's Retry(False): not a new one per request
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                enforce_content_length=True,
            )
        except Exception as exc:
            _reraise(exc)
        problem = _framing_problem(resp.headers)
        if problem is not None:
            resp.close()
            resp.release_conn()
            raise ProtocolError(f"the answer's framing is unusable: {problem}")
        conn = resp.connection
        skipped = bool(getattr(conn, "body_skipped", False))
        return Answer(resp, body_skipped=skipped, stall=self.stall_timeout)

    def close(self) -> None:
        """Close the idle connections; a request in flight finishes, its connection
        closed when given back; a request after this raises :class:`PoolClosed`."""
        self.closed = True
        if self._manager is not None:
            self._manager.clear()
        else:
            self._pool.close()


class ConnectionPools:
    """One :class:`StoreConnection` per endpoint, shared by many transfers.

    Each upload or download otherwise opens its own pool and closes it when
    it ends: right for one command, but a thousand small transfers in one
    process (``sts-bridge run``) would then each pay a new connection (and
    a TLS handshake). Transfers given this object borrow its pools instead
    and leave them open; :meth:`close` closes them all. Thread-safe.

    :param at_once: transfers in flight at once: a pool keeps as many idle
        connections as they may all give back together (``maxsize`` of one
        transfer, times this), or urllib3 would discard the surplus with a
        warning each time.
    """

    def __init__(self, at_once: int = 1) -> None:
        self.at_once = max(1, at_once)
        self._lock = threading.Lock()
        self._pools: dict[tuple[Any, ...], StoreConnection] = {}

    def get(
        self, base_url: str, *, maxsize: int, stall_timeout: float, verify: bool | str = True
    ) -> StoreConnection:
        """The pool for ``base_url`` made with these settings (made on first use);
        ``maxsize``: what one transfer keeps."""
        key = (base_url, maxsize, stall_timeout, verify)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = StoreConnection(
                        base_url,
                        maxsize=maxsize * self.at_once,
                        stall_timeout=stall_timeout,
                        verify=verify,
                    )
                    self._pools[key] = pool
        return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _ended(resp: urllib3.BaseHTTPResponse) -> bool:
    """Whether the answer's body was read to its end (or the answer closed)."""
    return bool(resp.closed)


def _framing_problem(headers: Any) -> str | None:
    """What makes an answer's length unknowable, as h11 would refuse it (http.client
    reads an unreadable ``Content-Length`` or a coding it does not know as "until
    the connection closes")."""
    length = headers.get("Content-Length")
    if length is not None and not all(v.strip().isdigit() for v in length.split(",")):
        return f"Content-Length {length[:40]!r}"
    coding = headers.get("Transfer-Encoding")
    if coding is not None and coding.strip().lower() != "chunked":
        return f"Transfer-Encoding {coding[:40]!r}"
    return None


class BodyPieces:
    """A request body held in pieces (e.g. the chunks a web server received),
    hashed and sent piece by piece, never joined: joining is a copy that holds
    the GIL for the whole memcpy, while ``hashlib`` and ``sendall`` release
    it, so the event loop of an async service keeps the interpreter."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: Iterable[Any]) -> None:
        self.pieces = tuple(memoryview(p).cast("B") for p in pieces)
        self.size = sum(len(p) for p in self.pieces)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"BodyPieces({len(self.pieces)} pieces, {self.size} bytes)"

    def sha256(self) -> Any:
        """The ``hashlib`` SHA-256 object of the whole body."""
        digest = hashlib.sha256()
        for piece in self.pieces:
            digest.update(piece)
        return digest


def sha256_of(body: bytes | memoryview | BodyPieces) -> Any:
    """The ``hashlib`` SHA-256 object of a body, in one piece or several."""
    return body.sha256() if isinstance(body, BodyPieces) else hashlib.sha256(body)


def _blocks(body: bytes | memoryview | BodyPieces) -> Iterator[memoryview]:
    pieces = body.pieces if isinstance(body, BodyPieces) else (memoryview(body).cast("B"),)
    for view in pieces:
        for start in range(0, len(view), SEND_BLOCK):
            yield view[start : start + SEND_BLOCK]


def _reraise(exc: BaseException) -> NoReturn:
    new = _translated(exc)
    if new is exc:
        raise exc
    raise new from exc


def _translated(exc: BaseException) -> BaseException:
    """A urllib3 or http.client failure as the engine's ``OSError`` kinds."""
    import http.client

    from urllib3 import exceptions as u3

    if isinstance(exc, (ConnectFailed, ProtocolError)):
        return exc
    if isinstance(exc, u3.ClosedPoolError):
        return PoolClosed(str(exc))
    if isinstance(exc, u3.ProtocolError) and exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]  # "Connection aborted.": urllib3 wraps what the socket raised
    if isinstance(exc, (u3.ReadTimeoutError, TimeoutError)) and not isinstance(
        exc, u3.ConnectTimeoutError
    ):
        return TimeoutError(f"no progress: {exc}")
    if isinstance(exc, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.ProxyError, u3.SSLError)):
        return ConnectFailed(f"cannot connect: {exc}")
    if isinstance(exc, (u3.HTTPError, http.client.HTTPException)):
        return ProtocolError(f"the answer broke off or is not HTTP/1.1: {exc}")
    return exc
