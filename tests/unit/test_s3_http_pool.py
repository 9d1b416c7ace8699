"""The engine's connection pool against a small HTTP/1.1 server on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sts_bridge.s3.http_pool import ConnectFailed, HostPool
from sts_bridge.s3.signed_http import describe_failure


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[int] = set()
    close_after_answer = False

    def do_GET(self) -> None:
        _Handler.connections.add(self.client_address[1])
        body = (self.path * 1000).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if _Handler.close_after_answer:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        data = self.rfile.read(length)
        self.send_response(200)
        self.send_header("ETag", f'"{len(data)}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    _Handler.connections = set()
    _Handler.close_after_answer = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _pool(srv: http.server.ThreadingHTTPServer, **kw: Any) -> HostPool:
    host, port = srv.server_address[:2]
    return HostPool(f"http://{host}:{port}", maxsize=2, connect_timeout=5, read_timeout=5, **kw)


def test_sequential_requests_reuse_one_connection(server: Any) -> None:
    pool = _pool(server)
    for path in ("/a", "/b", "/c"):
        resp = pool.request("GET", path, headers={})
        assert resp.status == 200 and resp.data == (path * 1000).encode()
    put = pool.request("PUT", "/x", body=b"12345", headers={})
    assert put.headers.get("etag") == '"5"'
    assert len(_Handler.connections) == 1
    pool.close()


def test_a_streamed_body_read_to_its_end_gives_the_connection_back(server: Any) -> None:
    pool = _pool(server)
    resp = pool.request("GET", "/stream", headers={}, preload=False)
    buf = bytearray(100_000)
    got = 0
    while n := resp.readinto(memoryview(buf)[got:]):
        got += n
    assert bytes(buf[:got]) == b"/stream" * 1000
    resp.release_conn()
    pool.request("GET", "/again", headers={})
    assert len(_Handler.connections) == 1
    # a body left unread is not skipped: that connection is closed instead
    unread = pool.request("GET", "/unread", headers={}, preload=False)
    unread.release_conn()
    pool.request("GET", "/after", headers={})
    assert len(_Handler.connections) == 2
    pool.close()


def test_connections_the_server_closed_are_not_reused(server: Any) -> None:
    _Handler.close_after_answer = True
    pool = _pool(server)
    for path in ("/1", "/2", "/3"):
        assert pool.request("GET", path, headers={}).data == (path * 1000).encode()
    assert len(_Handler.connections) == 3
    pool.close()


def test_no_listener_is_connect_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    pool = HostPool(f"http://127.0.0.1:{port}", maxsize=1, connect_timeout=5, read_timeout=5)
    with pytest.raises(ConnectFailed) as info:
        pool.request("GET", "/", headers={})
    assert describe_failure(info.value, 25) == "cannot connect to the storage endpoint"
    assert describe_failure(TimeoutError(), 25).endswith("(the storage endpoint stalled)")
    assert describe_failure(ConnectionResetError(), 25) == (
        "the connection to the storage endpoint broke"
    )
