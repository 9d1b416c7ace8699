"""Keep-alive HTTP/1.1 connections to the one host of a transfer, on ``socket``.

The engine talks to one storage endpoint, signs every request itself
(:mod:`sts_bridge.s3.signer`) and retries by its own policy
(:class:`~sts_bridge.s3.signed_http.S3Http`): all it needs from a transport
is a pool of persistent connections with a connect timeout, a stall
timeout and TLS settings, requests whose bodies are bytes, and answers
framed by ``Content-Length``, ``chunked`` or the end of the connection.
That much HTTP/1.1 is written here on ``socket`` (``ssl`` only for
``https://``) because a command pays for what it imports: ``http.client``
brings ``ssl`` and the ``email`` package (about 25 ms, a tenth of a warm
command) and urllib3 another 50-100 ms.

No retries and no redirects here: :class:`ConnectFailed` says the request
never reached the store, :class:`ProtocolError` (a ``ConnectionError``)
that the answer broke off or is not HTTP/1.1, any other ``OSError`` that
the connection failed on the way (``TimeoutError``: it stalled).
"""

from __future__ import annotations

import select
import socket
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConnectFailed", "Headers", "HostPool", "ProtocolError", "Response"]

#: Longest status or header line accepted, and most header lines (http.client's limits).
_MAX_LINE = 65536
_MAX_HEADERS = 100
#: Bodies up to this size go out in the same ``sendall`` as the request head.
_COALESCE = 256 * 1024
#: Statuses whose answers never have a body.
_NO_BODY = frozenset({204, 304})
_FORBIDDEN_IN_HEADERS = frozenset("\r\n\0")


class ConnectFailed(OSError):
    """No connection to the storage endpoint (refused, unreachable, TLS handshake, timeout)."""


class ProtocolError(ConnectionError):
    """The store's answer broke off, or is not HTTP/1.1."""


class Headers(Mapping[str, str]):
    """An answer's headers by case-insensitive name (a repeated name: its first value)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._by_name: dict[str, str] = {}
        for name, value in items:
            self._by_name.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Headers({[name for name, _ in self._items]!r})"  # names only: values may sign


class _Connection:
    """One socket and the buffered reader over it."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Response:
    """One answer: status, headers, and the body read at once (``data``) or streamed
    (``readinto``); :meth:`release_conn` gives the connection back for the next request."""

    def __init__(
        self,
        pool: HostPool,
        conn: _Connection,
        status: int,
        headers: Headers,
        *,
        length: int | None,
        chunked: bool,
        will_close: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._left = length  # bytes of the body (or of the current chunk) still to come
        self._chunked = chunked
        self._in_chunks = False  # a chunk was started: its CRLF precedes the next size
        self._will_close = will_close
        self._done = length == 0 and not chunked
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The whole body (read on first use)."""
        if self._data is None:
            if self._chunked or self._left is None or self._conn is None:
                parts = []
                buf = bytearray(64 * 1024)
                while n := self.readinto(buf):
                    parts.append(bytes(buf[:n]))
                self._data = b"".join(parts)
            else:  # one read of a known length
                data = self._conn.reader.read(self._left)
                if len(data) != self._left:
                    raise _broke_off(self._left - len(data))
                self._left = 0
                self._done = True
                self._data = data
        return self._data

    def readinto(self, buffer: Any) -> int:
        """Up to ``len(buffer)`` bytes of the body into ``buffer``; 0 at its end."""
        if self._done:
            return 0
        conn = self._conn
        if conn is None:
            raise ProtocolError("the answer's connection was already given back")
        view = memoryview(buffer).cast("B")
        if self._chunked and not self._left:
            self._left = self._next_chunk(conn)
            if self._done:
                return 0
        want = len(view) if self._left is None else min(len(view), self._left)
        n = conn.reader.readinto(view[:want])
        if self._left is None:  # delimited by the end of the connection
            self._done = not n
            return n
        if not n:
            raise _broke_off(self._left)
        self._left -= n
        if not self._left and not self._chunked:
            self._done = True
        return n

    def release_conn(self) -> None:
        """Back to the pool when the body was read to its end; closed otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and not self._will_close:
            self._pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (a body left unread cannot be skipped cheaply)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _next_chunk(self, conn: _Connection) -> int:
        """Size of the next chunk (its CRLF and the previous one's consumed); 0 at the end."""
        if self._in_chunks and _line(conn.reader, "chunk") not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk of the answer is longer than announced")
        self._in_chunks = True
        size_text = _line(conn.reader, "chunk size").split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(
                f"the answer has an unreadable chunk size {size_text[:20]!r}"
            ) from None
        if size < 0:
            raise ProtocolError("the answer has a negative chunk size")
        if size == 0:
            while _line(conn.reader, "trailer") not in (b"\r\n", b"\n"):
                pass
            self._done = True
        return size


class HostPool:
    """Persistent connections to the scheme, host and port of ``base_url``.

    :param maxsize: idle connections kept; more may be open at once (each
        request takes one), the surplus is closed when given back.
    :param connect_timeout: seconds to connect (and to finish a TLS handshake).
    :param read_timeout: seconds any one socket operation may wait for the
        store (a request that moves no byte for that long fails).
    :param verify: TLS verification: ``True`` (the system's CAs), a CA bundle
        path, or ``False`` (warns once per pool).
    """

    def __init__(
        self,
        base_url: str,
        *,
        maxsize: int,
        connect_timeout: float,
        read_timeout: float,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._context = _tls_context(verify, base_url) if self.https else None
        self._host_line = _host_line(self.host, parts.port, 443 if self.https else 80)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str],
        preload: bool = True,
    ) -> Response:
        """Send one request; with ``preload`` the body is read and the connection
        given back before returning."""
        head = self._head(method, path, headers, body)
        conn = self._take()
        try:
            if body is not None and len(body) <= _COALESCE:
                conn.sock.sendall(head + body)
            else:
                conn.sock.sendall(head)
                if body is not None:
                    conn.sock.sendall(body)
            resp = self._answer(conn, method)
        except BaseException:
            conn.close()
            raise
        if preload:
            try:
                resp.data  # noqa: B018 - reads the body
            except BaseException:
                resp.close()
                raise
            resp.release_conn()
        return resp

    def put(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _head(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", self._host_line]
        names = set()
        for name, value in headers.items():
            text = f"{name}: {value}"
            if _FORBIDDEN_IN_HEADERS.intersection(text) or not name or ":" in name:
                raise ValueError(f"a request header cannot carry a line break: {name!r}")
            lines.append(text)
            names.add(name.lower())
        if "content-length" not in names and (body is not None or method in ("PUT", "POST")):
            lines.append(f"Content-Length: {0 if body is None else len(body)}")
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: identity")  # byte counts and MD5s are of the object
        lines += ("", "")
        return "\r\n".join(lines).encode("latin-1")

    def _answer(self, conn: _Connection, method: str) -> Response:
        reader = conn.reader
        while True:
            line = reader.readline(_MAX_LINE + 1)
            if not line:
                raise ProtocolError("the store closed the connection without answering")
            version, _, rest = line.partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or not code.isdigit():
                raise ProtocolError(f"the store's answer is not HTTP/1.1: {line[:40]!r}")
            status = int(code)
            items = _header_lines(reader)
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue) is followed by the real one
        headers = Headers(items)
        tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        will_close = "close" in tokens or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
        coding = headers.get("Transfer-Encoding", "").lower()
        chunked = False
        length: int | None = 0
        if method == "HEAD" or status in _NO_BODY:
            pass
        elif coding:
            chunked = coding.rstrip().endswith("chunked")
            length = 0 if chunked else None
        else:
            length = _content_length(headers.get("Content-Length"))
        if length is None:
            will_close = True  # framed by the end of the connection
        return Response(
            self, conn, status, headers, length=length, chunked=chunked, will_close=will_close
        )

    def _take(self) -> _Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _dropped(conn):
                return conn
            conn.close()  # the store closed it while it was idle

    def _connect(self) -> _Connection:
        # An ASCII host as bytes: a str would make getaddrinfo import the idna codec.
        host: str | bytes = self.host.encode("ascii") if self.host.isascii() else self.host
        try:
            sock = socket.create_connection((host, self.port), timeout=self.connect_timeout)  # type: ignore[arg-type]
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            # Requests go out in one or two writes and answers are awaited:
            # Nagle's algorithm would only hold a body's last segment back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            sock.close()
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock.settimeout(self.read_timeout)
        return _Connection(sock)


def _broke_off(missing: int) -> ProtocolError:
    return ProtocolError(f"the answer broke off with {missing} bytes still to come")


def _line(reader: Any, what: str) -> bytes:
    line: bytes = reader.readline(_MAX_LINE + 1)
    if not line:
        raise ProtocolError(f"the answer broke off in a {what} line")
    if len(line) > _MAX_LINE:
        raise ProtocolError(f"the answer has a {what} line longer than {_MAX_LINE} bytes")
    return line


def _header_lines(reader: Any) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    while (line := _line(reader, "header")) not in (b"\r\n", b"\n"):
        if line[:1] in (b" ", b"\t") and items:  # an obsolete folded continuation
            folded_name, folded_value = items[-1]
            items[-1] = (folded_name, f"{folded_value} {line.strip().decode('latin-1')}")
            continue
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or not raw_name.strip():
            raise ProtocolError(f"the answer has a malformed header line {line[:40]!r}")
        items.append((raw_name.strip().decode("latin-1"), raw_value.strip().decode("latin-1")))
        if len(items) > _MAX_HEADERS:
            raise ProtocolError(f"the answer has more than {_MAX_HEADERS} headers")
    return items


def _content_length(text: str | None) -> int | None:
    if text is None:
        return None
    values = {v.strip() for v in text.split(",")}  # a proxy may repeat it as "n, n"
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise ProtocolError(f"the answer has an unusable Content-Length {text[:40]!r}")
    return int(value)


def _host_line(host: str, port: int | None, default_port: int) -> str:
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return f"Host: {name}" if port in (None, default_port) else f"Host: {name}:{port}"


def _dropped(conn: _Connection) -> bool:
    """Whether an idle connection was closed by the other side (readable = EOF or junk)."""
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _tls_context(verify: bool | str, base_url: str) -> Any:
    import ssl

    if verify is False:
        from urllib3.exceptions import InsecureRequestWarning  # only when asked for: slow import

        warnings.warn(
            f"TLS certificate verification is off for {base_url} (TERRAPI_INSECURE)",
            InsecureRequestWarning,
            stacklevel=4,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
