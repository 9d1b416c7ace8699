"""The engine's connection pool against a small HTTP/1.1 server on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sts_bridge.s3.http_pool import ConnectFailed, Headers, HostPool, ProtocolError
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


class _Scripted:
    """A loopback server that answers each request with the next scripted bytes
    (then closes the connection when the script says so) and records the requests."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as reader:  # both closed: the client sees the end
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    self.requests.append(head + reader.read(length))
                    answer, close = self.answers.pop(0)
                    conn.sendall(answer)
                    if close:
                        break

    def pool(self) -> HostPool:
        return HostPool(
            f"http://127.0.0.1:{self.port}", maxsize=2, connect_timeout=5, read_timeout=5
        )

    def close(self) -> None:
        self.listener.close()


def _answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + (
        body
    )


def test_chunked_close_delimited_head_and_204_answers_are_framed() -> None:
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    server = _Scripted(
        [
            (_answer("200 OK", ["Transfer-Encoding: chunked"], chunked), False),
            (_answer("200 OK", ["Content-Length: 1000"]), False),  # a HEAD: no body follows
            (_answer("204 No Content", []), False),
            (_answer("100 Continue", []) + _answer("200 OK", ["Content-Length: 2"], b"ok"), False),
            (_answer("200 OK", ["Connection: close"], b"until the end"), True),
            (_answer("200 OK", ["Transfer-Encoding: chunked", "Connection: close"], chunked), True),
        ]
    )
    pool = server.pool()
    assert pool.request("GET", "/chunked", headers={}).data == b"hello world"
    head = pool.request("HEAD", "/head", headers={})
    assert head.status == 200 and head.data == b"" and head.headers["content-length"] == "1000"
    assert pool.request("DELETE", "/gone", headers={}).status == 204
    assert pool.request("GET", "/interim", headers={}).data == b"ok"
    streamed = pool.request("GET", "/close", headers={}, preload=False)
    buf = bytearray(4)
    got = b""
    while n := streamed.readinto(buf):
        got += bytes(buf[:n])
    assert got == b"until the end"
    streamed.release_conn()
    # chunked framing holds on a connection the store closes afterwards
    assert pool.request("GET", "/chunked-last", headers={}).data == b"hello world"
    assert len(server.requests) == 6
    assert all(b"Host: 127.0.0.1:" in r for r in server.requests)
    pool.close()
    server.close()


def test_requests_carry_their_length_and_refuse_line_breaks_in_headers() -> None:
    server = _Scripted([(_answer("200 OK", ["Content-Length: 0"]), False)] * 2)
    pool = server.pool()
    pool.request("PUT", "/body", body=b"x" * 300_000, headers={"x-amz-meta-a": "b"})
    pool.request("PUT", "/empty", headers={})
    big, empty = server.requests
    assert b"Content-Length: 300000\r\n" in big and big.endswith(b"x" * 300_000)
    assert b"Content-Length: 0\r\n" in empty
    with pytest.raises(ValueError):
        pool.request("GET", "/", headers={"x-amz-meta-a": "b\r\nInjected: 1"})
    pool.close()
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        _answer("200 OK", ["Content-Length: 10"], b"short"),  # broke off
        _answer("200 OK", ["Content-Length: ten"]),
        _answer("200 OK", ["Transfer-Encoding: chunked"], b"zz\r\n"),
        _answer("200 OK", ["no colon here"]),
    ],
)
def test_broken_answers_are_protocol_errors_that_describe_as_broken(answer: bytes) -> None:
    server = _Scripted([(answer, True)])
    pool = server.pool()
    with pytest.raises(ProtocolError) as info:
        pool.request("GET", "/", headers={})
    assert describe_failure(info.value, 25) == "the connection to the storage endpoint broke"
    pool.close()
    server.close()


def test_headers_are_case_insensitive_and_their_repr_shows_no_values() -> None:
    headers = Headers([("ETag", '"abc"'), ("x-amz-security-token", "SECRET"), ("etag", "2nd")])
    assert headers.get("etag") == '"abc"' and headers["ETAG"] == '"abc"'
    assert "X-Amz-Security-Token" in headers and "missing" not in headers
    assert len(headers) == 2
    assert "SECRET" not in repr(headers)
