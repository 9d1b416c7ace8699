"""A small TCP fault proxy for the fault tests: 127.0.0.1:free port -> one upstream.

It relays bytes both ways and, when told, misbehaves on the next connections:

- ``reset``: the connection is closed with a TCP RST (SO_LINGER 0) once
  ``after`` bytes were relayed, both directions counted (0: at once);
- ``stall``: after ``after`` relayed bytes nothing moves any more in either
  direction; the connection stays open until :meth:`heal` or :meth:`stop`;
- ``trickle``: bytes move at about ``rate`` bytes per second each way;
- ``http500`` / ``slowdown``: the request (headers and ``Content-Length``
  body) is read and answered ``500 InternalError`` / ``503 SlowDown`` (S3's
  XML error body) without reaching the upstream;
- ``down``: every connection is reset at once (a dead or restarting server);
- ``refuse``: the request's head is read and answered ``403 AccessDenied``
  at once, the body never read, the connection closed (a store that checks
  the signature first: a body already on its way meets a reset).

A fault applies to the next ``count`` connections (``None``: until
:meth:`heal`); :meth:`set_sequence` gives successive connections different
faults. ``connections`` counts accepted connections, ``faulted`` the
ones given a fault, ``hits`` the faults that struck. Everything runs in
daemon threads and is bounded: a stalled connection is released by
:meth:`heal` or :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

MODES = ("pass", "reset", "stall", "trickle", "http500", "slowdown", "down", "refuse")

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error>"
)


@dataclass
class _Fault:
    mode: str = "pass"
    after: int = 0
    count: int | None = None
    rate: int = 64 * 1024


class FaultProxy:
    """See the module docstring. Use as a context manager or start()/stop()."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host.strip("[]") or "127.0.0.1", int(port))
        self._fault = _Fault()
        self._queue: list[_Fault] = []
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: socket.socket | None = None
        self.port = 0
        self.connections = 0
        self.faulted = 0  # connections given a fault
        self.hits = 0  # faults that struck (a stall or reset reached, an error answered)

    # ---------------------------------------------------------------- control
    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A proxy for the host:port of an http URL."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return cls(f"{parts.hostname}:{parts.port or 80}")

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by this proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def set(
        self, mode: str, *, after: int = 0, count: int | None = None, rate: int = 64 * 1024
    ) -> None:
        """Misbehave (``mode``) on the next ``count`` connections (``None``: all)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self._fault = _Fault(mode, after, count, rate)
            self._healed.clear()

    def set_sequence(self, *faults: dict[str, Any]) -> None:
        """One fault per new connection, in order (``set`` keywords each), then relaying."""
        with self._lock:
            self._queue = [_Fault(**{"count": None, **f}) for f in faults]
            self._fault = _Fault()
            self._healed.clear()

    def release_stalled(self) -> None:
        """Close the stalled connections (the fault mode stays)."""
        self._healed.set()

    def heal(self) -> None:
        """Back to relaying; stalled connections are closed."""
        with self._lock:
            self._fault = _Fault()
            self._queue = []
        self._healed.set()

    def reset_counters(self) -> None:
        with self._lock:
            self.connections = self.faulted = self.hits = 0

    def _take_fault(self) -> _Fault:
        with self._lock:
            if self._queue:
                self.faulted += 1
                return self._queue.pop(0)
            fault = self._fault
            if fault.mode == "pass":
                return fault
            if fault.count is not None:
                if fault.count <= 0:
                    self._fault = _Fault()
                    return self._fault
                fault.count -= 1
            self.faulted += 1
            return _Fault(fault.mode, fault.after, None, fault.rate)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        server.settimeout(0.2)
        self._server = server
        self.port = server.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._healed.set()
        if self._server is not None:
            self._server.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- relaying
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _close(self, *socks: socket.socket, reset: bool = False) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._track(client)
            threading.Thread(
                target=self._serve, args=(client, self._take_fault()), daemon=True
            ).start()

    def _hit(self) -> None:
        with self._lock:
            self.hits += 1

    def _serve(self, client: socket.socket, fault: _Fault) -> None:
        if fault.mode in ("down", "http500", "slowdown", "refuse") or (
            fault.mode == "reset" and fault.after == 0
        ):
            self._hit()
        if fault.mode == "down" or (fault.mode == "reset" and fault.after == 0):
            self._close(client, reset=True)
            return
        if fault.mode in ("http500", "slowdown"):
            self._answer_error(client, fault.mode)
            return
        if fault.mode == "refuse":
            self._refuse(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._close(client, reset=True)
            return
        self._track(upstream)
        client.settimeout(None)
        upstream.settimeout(None)
        state: dict[str, int] = {"moved": 0, "broken": 0}
        down = threading.Thread(
            target=self._relay, args=(upstream, client, upstream, fault, state, True), daemon=True
        )
        down.start()
        self._relay(client, upstream, upstream, fault, state, False)
        down.join(timeout=120)

    def _stall(self, *socks: socket.socket) -> None:
        # hold the connection open, moving nothing, until healed or stopped
        self._healed.wait(timeout=600)
        self._close(*socks)

    def _relay(
        self,
        src: socket.socket,
        dst: socket.socket,
        upstream: socket.socket,
        fault: _Fault,
        state: dict[str, int],
        answers: bool,
    ) -> None:
        """Copy ``src`` -> ``dst``; ``after`` counts the bytes of both directions."""
        client = dst if answers else src
        try:
            while not state["broken"]:
                data = src.recv(max(1, fault.rate // 10) if fault.mode == "trickle" else 65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if state["broken"]:
                    return
                if fault.mode in ("reset", "stall"):
                    with self._lock:
                        keep = fault.after - state["moved"]
                        hit = len(data) > keep and not state["broken"]
                        if hit:
                            state["broken"] = 1
                        state["moved"] += len(data)
                    if hit:
                        self._hit()
                        if keep > 0:
                            dst.sendall(data[:keep])
                        if fault.mode == "reset":
                            self._close(client, upstream, reset=True)
                        else:
                            self._stall(client, upstream)
                        return
                if fault.mode == "trickle":
                    step = max(1, fault.rate // 10)
                    for i in range(0, len(data), step):
                        if self._stopped.is_set():
                            return
                        dst.sendall(data[i : i + step])
                        time.sleep(0.1)
                else:
                    dst.sendall(data)
        except OSError:
            self._close(client, upstream)

    def _refuse(self, client: socket.socket) -> None:
        """Read one request's head and answer 403 AccessDenied, the body unread."""
        client.settimeout(30)
        try:
            _read_head(client)
            _send_error(client, "403 Forbidden", "AccessDenied", "refused")
        except OSError:
            pass
        finally:
            self._close(client)

    def _answer_error(self, client: socket.socket, mode: str) -> None:
        """Read one request (headers + Content-Length body) and answer 500 or 503."""
        client.settimeout(30)
        try:
            headers, _, body = _read_head(client).partition(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            remaining = length - len(body)
            while remaining > 0:
                chunk = client.recv(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            if mode == "slowdown":
                status, code, message = "503 Slow Down", "SlowDown", "Please reduce your rate"
            else:
                status, code, message = "500 Internal Server Error", "InternalError", "fault"
            _send_error(client, status, code, message)
        except OSError:
            pass
        finally:
            self._close(client)


def _read_head(client: socket.socket) -> bytes:
    """What arrives up to the end of a request's head (the body's first bytes
    may come with it), or until the client stops sending."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(65536)
        if not chunk:
            break
        head += chunk
    return head


def _send_error(client: socket.socket, status: str, code: str, message: str) -> None:
    """An S3 error answer (XML body) that closes the connection."""
    payload = _ERROR_BODY.format(code=code, message=message).encode()
    client.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
