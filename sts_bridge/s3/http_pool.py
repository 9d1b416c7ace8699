"""Keep-alive HTTP/1.1 connections to the one host of a transfer, on ``http.client``.

The engine talks to one storage endpoint, signs every request itself
(:mod:`sts_bridge.s3.signer`) and retries by its own policy
(:class:`~sts_bridge.s3.signed_http.S3Http`): all it needs from a transport
is a pool of persistent connections with a connect timeout, a stall
timeout and TLS settings. ``http.client`` gives that with what Python
imports anyway; urllib3 would add about 50-100 ms to every ``sts-bridge``
command's start-up (its import), which is a third of a warm command.

No retries and no redirects here: :class:`ConnectFailed` says the request
never reached the store, any other ``OSError`` or
``http.client.HTTPException`` that it broke on the way.
"""

from __future__ import annotations

import http.client
import select
import threading
import warnings
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConnectFailed", "HostPool", "Response"]


class ConnectFailed(OSError):
    """No connection to the storage endpoint (refused, unreachable, TLS handshake, timeout)."""


class Response:
    """One answer: status, headers, and the body read at once (``data``) or streamed
    (``readinto``); :meth:`release_conn` gives the connection back for the next request."""

    def __init__(self, raw: http.client.HTTPResponse, conn: Any, pool: HostPool) -> None:
        self.raw = raw
        self.status = raw.status
        self.headers = raw.headers
        self._conn: Any = conn
        self._pool = pool
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The whole body (read on first use)."""
        if self._data is None:
            self._data = self.raw.read()
        return self._data

    def readinto(self, buffer: Any) -> int:
        return self.raw.readinto(buffer)

    def release_conn(self) -> None:
        """Back to the pool when the body was read to its end; closed otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.raw.isclosed() and not self.raw.will_close:
            self._pool.put(conn)
        else:
            self.raw.close()
            conn.close()

    def close(self) -> None:
        """Drop the connection (a body left unread cannot be skipped cheaply)."""
        self.raw.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


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
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str],
        preload: bool = True,
    ) -> Response:
        """Send one request; with ``preload`` the body is read and the connection
        given back before returning."""
        conn = self._take()
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        resp = Response(raw, conn, self)
        if preload:
            try:
                resp.data  # noqa: B018 - reads the body
            except BaseException:
                resp.close()
                raise
            resp.release_conn()
        return resp

    def put(self, conn: Any) -> None:
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

    def _take(self) -> Any:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _dropped(conn):
                return conn
            conn.close()  # the store closed it while it was idle

    def _connect(self) -> Any:
        if self.https:
            conn: Any = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        conn.sock.settimeout(self.read_timeout)
        return conn


def _dropped(conn: Any) -> bool:
    """Whether an idle connection was closed by the other side (readable = EOF or junk)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
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
