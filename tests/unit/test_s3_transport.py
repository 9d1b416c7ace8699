"""The engine's urllib3 transport against scripted HTTP/1.1 servers on loopback.

Each server answers with scripted bytes, so the tests see what the client
does with answers a real store would never send (a hostile or broken one).
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import http.client
import io
import logging
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_targets import content_length, read_request_head
from hypothesis import given, settings
from hypothesis import strategies as st

from sts_bridge.s3.signed_http import describe_failure
from sts_bridge.s3.transport import (
    EXPECT_CONTINUE_MIN,
    SEND_BLOCK,
    SMALL_REQUEST_BODY,
    BodyPieces,
    ConnectFailed,
    FileRange,
    ProtocolError,
    SourceShrank,
    StoreConnection,
    _with_header_parser,
    parse_headers,
    proxy_for,
    sha256_of,
)

MiB = 1024 * 1024


def _answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode() + body


class _Request:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body


class Scripted:
    """A loopback server: each request gets the next scripted step.

    A step is ``(answer bytes, close after it)`` or a callable
    ``step(conn, reader, head) -> close`` for exchanges that need more (a
    ``100 Continue``, an answer before the body). ``requests`` records what
    arrived; ``connections`` counts accepted connections.
    """

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.requests: list[_Request] = []
        self.connections = 0
        self.refusal_recorded = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.steps:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client closed: what it saw is the test's
            self._exchange(conn)

    def _exchange(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while self.steps:
                head = read_request_head(reader)
                if head is None:
                    return
                step = self.steps.pop(0)
                if callable(step):
                    if step(conn, reader, head, self):
                        return
                    continue
                body = reader.read(content_length(head))
                self.requests.append(_Request(head, body))
                answer, close = step
                conn.sendall(answer)
                if close:
                    return

    def store(self, **kw: Any) -> StoreConnection:
        return StoreConnection(
            f"http://127.0.0.1:{self.port}", maxsize=2, stall_timeout=kw.pop("stall", 5), **kw
        )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Any]], Scripted]]:
    made: list[Scripted] = []

    def make(steps: list[Any]) -> Scripted:
        made.append(Scripted(steps))
        return made[-1]

    yield make
    for server in made:
        server.close()


OK0 = (_answer("200 OK", ["Content-Length: 0"]), False)


def _get(store: StoreConnection, path: str = "/", **kw: Any) -> bytes:
    resp = store.request("GET", path, headers={"Host": "store"}, **kw)
    data = resp.read(None)
    resp.release_conn()
    return data


# ------------------------------------------------------------------ keep-alive
def test_requests_reuse_one_connection_and_carry_their_length(scripted: Any) -> None:
    server = scripted([(_answer("200 OK", ["Content-Length: 5"], b"hello"), False), OK0, OK0])
    store = server.store()
    assert _get(store) == b"hello"
    put = store.request("PUT", "/x", headers={"Host": "store"}, body=b"x" * 300_000)
    put.release_conn()
    empty = store.request("PUT", "/empty", headers={"Host": "store"})
    empty.release_conn()
    assert server.connections == 1
    big, none = server.requests[1:]
    assert b"Content-Length: 300000\r\n" in big.head and big.body == b"x" * 300_000
    assert b"Expect" not in big.head  # small bodies go at once
    assert b"Content-Length: 0\r\n" in none.head
    assert b"Host: store\r\n" in big.head
    store.close()


def test_a_body_of_one_block_goes_in_the_same_send_as_the_head(
    scripted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small PUT is one ``sendall`` (head and body), so the store reads one
    segment; a body of several blocks, and no body, send the head alone first."""
    import http.client

    sent: list[bytes] = []
    send = http.client.HTTPConnection.send

    def recorded(self: Any, data: Any) -> None:
        sent.append(bytes(data))
        send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recorded)
    server = scripted([OK0, OK0, OK0, OK0])
    store = server.store()
    small = bytes(range(256)) * 64
    for path, body in (("/one", small), ("/max", b"m" * SEND_BLOCK)):
        sent.clear()
        store.request("PUT", path, headers={"Host": "store"}, body=body).release_conn()
        assert len(sent) == 1 and sent[0].startswith(b"PUT " + path.encode())
        assert sent[0].endswith(b"\r\n\r\n" + body)
    sent.clear()
    store.request(
        "PUT", "/two", headers={"Host": "store"}, body=b"t" * (SEND_BLOCK + 1)
    ).release_conn()
    assert len(sent) == 3 and sent[0].endswith(b"\r\n\r\n")  # the head, then two blocks
    sent.clear()
    assert _get(store) == b""
    assert len(sent) == 1 and sent[0].startswith(b"GET /")
    assert [r.body for r in server.requests] == [
        small,
        b"m" * SEND_BLOCK,
        b"t" * (SEND_BLOCK + 1),
        b"",
    ]
    assert server.connections == 1
    store.close()


def test_only_requests_bigger_than_small_wait_for_their_delivery(
    scripted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for the kernel to deliver a request's last bytes (the answer's
    timeout counted from there) is skipped for a small request: what it sends
    is less than a link must move per stall timeout anyway."""
    from sts_bridge.s3 import transport

    waited: list[int] = []
    await_delivery = transport._await_delivery

    def recorded(sock: Any, stall: Any) -> None:
        waited.append(1)
        await_delivery(sock, stall)

    monkeypatch.setattr(transport, "_await_delivery", recorded)
    server = scripted([OK0, OK0, OK0, OK0])
    store = server.store()
    for body, waits in (
        (None, 0),
        (b"s" * SMALL_REQUEST_BODY, 0),
        (b"b" * (SMALL_REQUEST_BODY + 1), 1),
        (b"x" * (2 * SEND_BLOCK), 1),
    ):
        waited.clear()
        store.request("PUT", "/x", headers={"Host": "store"}, body=body).release_conn()
        assert len(waited) == waits, (body and len(body), waited)
    store.close()


def test_shared_pools_keep_what_transfers_in_flight_together_give_back(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # `sts-bridge run`: 3 transfers of at most 2 connections each share a pool;
    # all 6 given back at once are kept (not discarded with urllib3's
    # "Connection pool is full" warning) and serve the next 6 requests.
    from sts_bridge.s3.transport import ConnectionPools

    server = scripted([OK0] * 12)
    pools = ConnectionPools(at_once=3)
    url = f"http://127.0.0.1:{server.port}"
    store = pools.get(url, maxsize=2, stall_timeout=5)
    assert pools.get(url, maxsize=2, stall_timeout=5) is store
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        for _ in range(2):
            held = [store.request("GET", "/", headers={}) for _ in range(6)]
            for answer in held:
                answer.release_conn()
    assert server.connections == 6
    assert not [r for r in caplog.records if r.name.startswith("urllib3")]
    pools.close()


@pytest.mark.parametrize("status", ["503 Slow Down", "301 Moved Permanently", "307 Temporary"])
def test_urllib3_neither_retries_nor_follows_redirects(scripted: Any, status: str) -> None:
    """The engine's RetryPolicy is the one policy: a 503 with Retry-After (which
    urllib3's default would retry) or a redirect is the answer of one request."""
    headers = ["Location: http://127.0.0.1:9/elsewhere", "Retry-After: 0", "Content-Length: 0"]
    server = scripted([(_answer(status, headers), False)] * 2 + [OK0])
    store = server.store()
    for _ in range(2):  # the pool's own Retry, on a new connection and a reused one
        resp = store.request("PUT", "/x", headers={"Host": "store"}, body=b"x")
        assert resp.status == int(status[:3])
        resp.release_conn()
    assert len(server.requests) == 2 and server.connections == 1
    store.close()


def test_a_body_left_unread_closes_its_connection(scripted: Any) -> None:
    body = _answer("200 OK", ["Content-Length: 5"], b"hello")
    server = scripted([(body, False), (body, False)])
    store = server.store()
    unread = store.request("GET", "/unread", headers={})
    unread.release_conn()
    assert _get(store) == b"hello"
    assert server.connections == 2
    store.close()


def test_bytes_after_a_body_are_never_read_as_the_next_answer(scripted: Any) -> None:
    forged = _answer("200 OK", ["Content-Length: 6"], b"forged")
    real = (_answer("200 OK", ["Content-Length: 4"], b"real"), False)
    # in the same packet as the body: they go with the answer's buffer
    server = scripted([(_answer("200 OK", ["Content-Length: 5"], b"hello") + forged, False), real])
    store = server.store()
    assert _get(store, "/first") == b"hello"
    assert _get(store, "/second") == b"real"
    store.close()


@pytest.mark.parametrize("method", ["PUT", "HEAD"])
def test_an_empty_answer_ends_without_urllib3_reads_and_keeps_its_connection(
    scripted: Any, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """A PUT's or HEAD's answer announces no body: it ends in ``http.client`` at
    once (urllib3's read layers cost a small PUT ~7 % of its client CPU) and
    its connection serves the next request."""
    import urllib3

    def unused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through urllib3")

    empty = _answer("200 OK", ["Content-Length: 7"]) if method == "HEAD" else OK0[0]
    server = scripted([(empty, False), (empty, False), OK0])
    store = server.store()
    with monkeypatch.context() as patched:
        patched.setattr(urllib3.HTTPResponse, "read", unused)
        patched.setattr(urllib3.HTTPResponse, "read1", unused)
        for _ in range(2):
            resp = store.request(method, "/x", headers={"Host": "store"})
            assert resp.status == 200 and resp.read(None) == b""
            resp.release_conn()
    assert _get(store) == b""
    assert server.connections == 1
    store.close()


def test_bytes_arriving_after_a_body_close_the_idle_connection(scripted: Any) -> None:
    forged = _answer("200 OK", ["Content-Length: 6"], b"forged")
    released, sent = threading.Event(), threading.Event()

    def late_bytes(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
        conn.sendall(_answer("200 OK", ["Content-Length: 5"], b"hello"))
        released.wait(30)
        conn.sendall(forged)  # after the client gave the connection back
        sent.set()
        return False  # and it would answer the next request on it too

    real = (_answer("200 OK", ["Content-Length: 4"], b"real"), False)
    server = scripted([late_bytes, real, real])
    store = server.store()
    assert _get(store, "/first") == b"hello"
    released.set()
    assert sent.wait(30)
    assert _get(store, "/second") == b"real"
    assert server.connections == 2
    store.close()


def test_connections_the_store_closes_are_not_reused(scripted: Any) -> None:
    closing = (_answer("200 OK", ["Content-Length: 2", "Connection: close"], b"ok"), True)
    server = scripted([closing, closing])
    store = server.store()
    assert _get(store) == b"ok" and _get(store) == b"ok"
    assert server.connections == 2
    store.close()


# ------------------------------------------------------------------ failures
def test_no_listener_is_connect_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    store = StoreConnection(f"http://127.0.0.1:{port}", maxsize=1, stall_timeout=5)
    with pytest.raises(ConnectFailed) as info:
        store.request("GET", "/", headers={})
    assert describe_failure(info.value, 25) == "cannot connect to the storage endpoint"


def test_a_store_that_stops_answering_is_a_stall(scripted: Any) -> None:
    gate = threading.Event()

    def silent(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
        gate.wait(30)
        return True

    server = scripted([silent])
    store = server.store(stall=0.5)
    try:
        with pytest.raises(TimeoutError) as info:
            store.request("GET", "/", headers={})
        assert describe_failure(info.value, 0.5).endswith("(the storage endpoint stalled)")
    finally:
        gate.set()
        store.close()


HOSTILE = {
    "closed without a word": b"",
    "not HTTP": b"SSH-2.0-OpenSSH\r\n\r\n",
    "status 2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "broke off": _answer("200 OK", ["Content-Length: 10"], b"short"),
    "unreadable length": _answer("200 OK", ["Content-Length: ten"], b"x"),
    "conflicting lengths": _answer("200 OK", ["Content-Length: 5", "Content-Length: 7"], b"hello"),
    "bad chunk": _answer("200 OK", ["Transfer-Encoding: chunked"], b"zz\r\n"),
    "identity, chunked": _answer("200 OK", ["Transfer-Encoding: identity, chunked"], b"0\r\n\r\n"),
    "101 header lines of folds": _answer(
        "200 OK", ["X-A: a", *([" " + "f" * 1000] * 101), "Content-Length: 0"]
    ),
}


@pytest.mark.parametrize("answer", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answers_are_protocol_errors_never_data(scripted: Any, answer: bytes) -> None:
    server = scripted([(answer, True)])
    store = server.store()
    with pytest.raises(ConnectionError) as info:
        _get(store)
    assert describe_failure(info.value, 25) == "the connection to the storage endpoint broke"
    store.close()


# ------------------------------------------------------------------ answer heads
_PLAIN_LINE = st.tuples(
    st.text("Content-LengthETagx-amz-id!#$%&'*+.^_`|~09", min_size=1, max_size=12),
    st.text(" \t", max_size=2),
    st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=20),
).map(lambda line: f"{line[0]}:{line[1]}{line[2]}\r\n")
#: Anything else a store might send: folds, bare CR or LF, no colon, odd names.
_ODD_LINE = st.one_of(
    st.text(st.characters(max_codepoint=255), max_size=20).map(lambda text: text + "\r\n"),
    st.sampled_from([" folded\r\n", "\tfolded\r\n", "X: bare\n", "From x\r\n", ": v\r\n"]),
)
_HEAD_LINES = st.one_of(
    st.lists(_PLAIN_LINE, max_size=8),  # the fast way
    st.lists(st.one_of(_PLAIN_LINE, _ODD_LINE), max_size=8),
)


def _message_state(message: Any) -> dict[str, Any]:
    state = dict(vars(message))
    state["defects"] = [type(d) for d in state["defects"]]  # defects compare by identity
    return state


_HEAD_ENDS = st.sampled_from(["\r\n", "\r\n", "\n", ""])  # blank line, bare LF, none


@settings(max_examples=400, deadline=None)
@given(lines=_HEAD_LINES, end=_HEAD_ENDS, rest=st.binary(max_size=8))
def test_answer_heads_parse_as_http_client_parses_them(
    lines: list[str], end: str, rest: bytes
) -> None:
    """The head parser gives ``http.client``'s message for any head (plain ones
    its own way, the rest through ``email``) and reads exactly as many bytes."""
    raw = "".join(lines).encode("latin-1") + end.encode() + rest
    ours, theirs = io.BytesIO(raw), io.BytesIO(raw)
    try:
        expected = http.client.parse_headers(theirs)
    except http.client.HTTPException as exc:
        with pytest.raises(type(exc)):
            parse_headers(ours)
        return
    got = parse_headers(ours)
    assert type(got) is http.client.HTTPMessage
    assert _message_state(got) == _message_state(expected)
    assert got.items() == expected.items()
    assert ours.tell() == theirs.tell()


def test_a_plain_answer_head_is_parsed_without_email(
    scripted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's plain heads never reach ``email`` (a fifth of a small PUT's
    client CPU); a folded one still does, and means the same."""
    parsed: list[str] = []
    original = email.parser.Parser.parsestr

    def counted(self: Any, text: str, headersonly: bool = False) -> Any:
        parsed.append(text)
        return original(self, text, headersonly)

    monkeypatch.setattr(email.parser.Parser, "parsestr", counted)
    plain = _answer("200 OK", ['ETag: "abc"', "Content-Length: 2", "x-amz-id:  7 "], b"hi")
    folded = _answer("200 OK", ['ETag: "abc"', " more", "Content-Length: 2"], b"hi")
    server = scripted([(plain, False), (folded, False)])
    store = server.store()
    resp = store.request("PUT", "/x", headers={"Host": "store"}, body=b"x")
    assert (resp.status, resp.headers["ETag"], resp.headers["x-amz-id"]) == (200, '"abc"', "7 ")
    assert resp.read(None) == b"hi"
    resp.release_conn()
    assert parsed == []
    resp = store.request("GET", "/x", headers={"Host": "store"})
    assert resp.headers["ETag"] == '"abc" more' and resp.read(None) == b"hi"
    resp.release_conn()
    assert len(parsed) == 1 and server.connections == 1
    store.close()


def test_http_client_parses_the_heads_when_its_internals_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a Python without ``http.client._read_headers`` (or a ``begin`` that calls
    no ``parse_headers``) answers keep ``http.client``'s own ``begin``."""
    begin = http.client.HTTPResponse.begin
    assert _with_header_parser(begin, parse_headers) is not begin
    assert _with_header_parser(_message_state, parse_headers) is _message_state
    monkeypatch.delattr(http.client, "_read_headers")
    assert _with_header_parser(begin, parse_headers) is begin


def test_a_huge_announced_length_is_refused_before_reading(scripted: Any) -> None:
    server = scripted([(_answer("200 OK", ["Content-Length: 999999999999"], b"x" * 100), True)])
    store = server.store()
    resp = store.request("GET", "/", headers={})
    with pytest.raises(ProtocolError, match="announces"):
        resp.read(1 * MiB)
    resp.close()
    resp.release_conn()
    store.close()


def test_an_announced_body_is_read_into_one_buffer_and_keeps_its_connection(
    scripted: Any,
) -> None:
    """A body read whole whose length is announced is held once: the bytes
    returned are the buffer read into (blocks read and then joined held it
    twice, in fresh memory each time: every page of a Zarr read faulted in
    again). The answer ends where it says, so the connection serves the next."""
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB
    answer = _answer("200 OK", [f"Content-Length: {len(body)}"], body)
    server = scripted([(answer, False), (_answer("200 OK", ["Content-Length: 2"], b"ok"), False)])
    store = server.store()
    resp = store.request("GET", "/big", headers={})
    tracemalloc.start()
    try:
        got = resp.read(None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    resp.release_conn()
    assert got == body
    assert peak < 1.25 * len(body)
    assert _get(store, "/next") == b"ok"
    assert server.connections == 1
    store.close()


def test_an_endless_body_stops_at_the_limit(scripted: Any) -> None:
    def endless(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
        try:
            conn.sendall(_answer("200 OK", ["Connection: close"]))
            while True:
                conn.sendall(b"x" * 65536)
        except OSError:
            return True

    server = scripted([endless])
    store = server.store()
    resp = store.request("GET", "/", headers={})
    with pytest.raises(ProtocolError, match="longer than"):
        resp.read(2 * MiB)
    resp.close()
    resp.release_conn()
    store.close()


def test_an_endless_trickle_is_a_stall_not_a_hang(scripted: Any) -> None:
    stop = threading.Event()

    def trickle(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
        try:
            conn.sendall(_answer("200 OK", ["Content-Length: 1000000"]))
            while not stop.wait(0.05):  # a byte at a time, never a pause as long as the timeout
                conn.sendall(b"x")
        except OSError:
            pass
        return True

    server = scripted([trickle])
    store = server.store(stall=1)
    resp = store.request("GET", "/", headers={})
    try:
        with pytest.raises(TimeoutError) as info:
            resp.read(2 * MiB)
        assert describe_failure(info.value, 1).endswith("(the storage endpoint stalled)")
    finally:
        stop.set()
        resp.close()
        resp.release_conn()
        store.close()


# ------------------------------------------------------------------ Expect: 100-continue
def _continue_then_ok(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
    assert b"Expect: 100-continue\r\n" in head
    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    server.requests.append(_Request(head, reader.read(content_length(head))))
    conn.sendall(_answer("200 OK", ['ETag: "e"', "Content-Length: 0"]))
    return False


def _refuse_before_body(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
    error = b"<Error><Code>AccessDenied</Code></Error>"
    conn.sendall(_answer("403 Forbidden", [f"Content-Length: {len(error)}"], error))
    conn.shutdown(socket.SHUT_WR)  # as a store that will not read the body: nothing more
    drained = b""
    while more := reader.read1(65536):  # whatever the client still sends
        drained += more
    server.requests.append(_Request(head, drained))
    server.refusal_recorded.set()
    return True


def test_a_large_put_waits_for_100_continue(scripted: Any) -> None:
    server = scripted([_continue_then_ok])
    store = server.store()
    body = bytes(range(256)) * (EXPECT_CONTINUE_MIN // 256 + 1)
    resp = store.request("PUT", "/part", headers={}, body=body)
    assert resp.status == 200 and resp.headers.get("etag") == '"e"'
    resp.release_conn()
    assert server.requests[0].body == body
    store.close()


def test_a_body_in_pieces_is_sent_whole_and_hashed_whole(scripted: Any) -> None:
    """BodyPieces (a request body as the web server received it): the store gets
    the bytes in order with their total length, large or small, and the SHA-256
    is that of the joined bytes."""
    pieces = [bytes([n]) * size for n, size in enumerate((70_000, 1, 300_000, 0, 5))]
    small = [b"ab", memoryview(b"cd"), bytearray(b"e")]
    server = scripted([_continue_then_ok, OK0])
    store = server.store()
    for body in (BodyPieces([*pieces, b"z" * EXPECT_CONTINUE_MIN]), BodyPieces(small)):
        resp = store.request("PUT", "/part", headers={}, body=body)
        assert resp.status == 200
        resp.release_conn()
    large, little = server.requests
    assert large.body == b"".join(pieces) + b"z" * EXPECT_CONTINUE_MIN
    assert little.body == b"abcde" and b"Content-Length: 5\r\n" in little.head
    assert sha256_of(BodyPieces(pieces)).hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert len(BodyPieces(pieces)) == sum(map(len, pieces)) and not BodyPieces([b""])
    store.close()


def test_a_refusal_before_the_body_is_the_answer_and_the_body_is_not_sent(scripted: Any) -> None:
    server = scripted([_refuse_before_body, OK0])
    store = server.store()
    resp = store.request("PUT", "/part", headers={}, body=b"x" * (16 * MiB))
    assert resp.status == 403
    assert b"AccessDenied" in resp.read(MiB)
    resp.release_conn()
    # the connection that skipped its body is not used again
    again = store.request("PUT", "/small", headers={}, body=b"ok")
    assert again.status == 200
    again.release_conn()
    assert server.connections == 2
    assert server.refusal_recorded.wait(30)
    (refused,) = [r for r in server.requests if r.head.startswith(b"PUT /part ")]
    assert refused.body == b""  # not one byte of the refused body
    store.close()


# ------------------------------------------------------------------ bodies from a file
def _continue_then_read(conn: socket.socket, reader: Any, head: bytes, server: Scripted) -> bool:
    """100 Continue, then whatever body arrives (up to its length or the client's close)."""
    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    want, got = content_length(head), b""
    while len(got) < want and (more := reader.read1(want - len(got))):
        got += more
    server.requests.append(_Request(head, got))
    server.refusal_recorded.set()  # the body is recorded
    if len(got) == want:
        conn.sendall(_answer("200 OK", ['ETag: "e"', "Content-Length: 0"]))
        return False
    return True


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each ``os.sendfile`` call sent."""
    import os

    calls: list[int] = []
    real = os.sendfile

    def counted(out: int, fd: int, offset: int | None, count: int) -> int:
        sent = real(out, fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counted)
    return calls


@pytest.mark.parametrize("route", ["sendfile", "sendfile refused"])
def test_a_file_range_body_is_its_bytes_of_the_file(
    scripted: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, sendfile_calls: list[int],
    route: str,
) -> None:  # fmt: skip
    import errno
    import os

    data = os.urandom(5 * MiB + 123)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    if route == "sendfile refused":  # as for a file system without it: read and sent

        def refuse(*args: Any) -> int:
            raise OSError(errno.EINVAL, "not for this file")

        monkeypatch.setattr(os, "sendfile", refuse)
    server = scripted([_continue_then_read, _continue_then_read])
    store = server.store()
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in ((MiB + 7, 3 * MiB), (0, len(data))):
            resp = store.request("PUT", "/part", headers={}, body=FileRange(fd, offset, length))
            assert resp.status == 200
            resp.release_conn()
    finally:
        os.close(fd)
        store.close()
    first, whole = server.requests
    assert f"Content-Length: {3 * MiB}\r\n".encode() in first.head
    assert first.body == data[MiB + 7 : 4 * MiB + 7]
    assert whole.body == data
    assert server.connections == 1
    if route == "sendfile":  # plain HTTP: the kernel sends from the file
        assert sum(sendfile_calls) == 3 * MiB + len(data)


@pytest.mark.parametrize("route", ["sendfile", "sendfile refused"])
def test_a_file_that_ends_before_its_range_fails_the_request(
    scripted: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    import errno
    import os

    path = tmp_path / "src.bin"
    path.write_bytes(b"x" * (2 * MiB))
    if route == "sendfile refused":

        def refuse(*args: Any) -> int:
            raise OSError(errno.EINVAL, "not for this file")

        monkeypatch.setattr(os, "sendfile", refuse)
    server = scripted([_continue_then_read])
    store = server.store()
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(SourceShrank, match="shrank"):
            store.request("PUT", "/part", headers={}, body=FileRange(fd, MiB, 3 * MiB))
    finally:
        os.close(fd)
        store.close()
    assert server.refusal_recorded.wait(30)
    assert server.requests[0].body == b"x" * MiB  # what the file had; never completed


def test_a_store_that_stops_reading_a_file_range_is_a_stall(
    scripted: Any, tmp_path: Any, sendfile_calls: list[int]
) -> None:
    import os

    gate = threading.Event()

    def continue_then_stop_reading(
        conn: socket.socket, reader: Any, head: bytes, server: Scripted
    ) -> bool:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        gate.wait(30)
        return True

    path = tmp_path / "src.bin"
    path.write_bytes(b"y" * (64 * MiB))  # more than the socket buffers hold
    server = scripted([continue_then_stop_reading])
    store = server.store(stall=0.5)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(TimeoutError) as info:
            store.request("PUT", "/part", headers={}, body=FileRange(fd, 0, 64 * MiB))
        assert describe_failure(info.value, 0.5).endswith("(the storage endpoint stalled)")
        assert 0 < sum(sendfile_calls) < 64 * MiB
    finally:
        gate.set()
        os.close(fd)
        store.close()


# ------------------------------------------------------------------ proxies
@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({}, "http://s3.example:8080", None),
        ({"HTTP_PROXY": "http://p:3128"}, "http://s3.example:8080", "http://p:3128"),
        ({"http_proxy": "p:3128"}, "http://s3.example", "http://p:3128"),
        ({"HTTP_PROXY": "http://p:3128"}, "https://s3.example", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://s3.example", "http://p:3128"),
        ({"ALL_PROXY": "http://p:1"}, "https://s3.example", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example"}, "https://s3.example", None),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": ".example"}, "https://s3.example", None),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.org"},
            "https://s3.example",
            "http://p:1",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"}, "http://127.0.0.1:9000", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:9000", None),
    ],
)
def test_proxy_for_reads_the_environment_as_requests_does(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == proxy
    if proxy is None and any(k.lower() != "no_proxy" for k in env):
        import requests.utils

        assert not requests.utils.get_environ_proxies(url).get(url.split(":")[0])


_HTTP2_DEFERRED = """
import sys
from sts_bridge.s3.transport import StoreConnection
StoreConnection("http://127.0.0.1:9", maxsize=1, stall_timeout=1.0).close()
assert "urllib3.http2.probe" in sys.modules, "the transport imported urllib3"
assert "importlib.metadata" not in sys.modules, "urllib3.http2's __init__ ran"
import urllib3.http2
assert callable(urllib3.http2.inject_into_urllib3), "its names are there on demand"
assert "importlib.metadata" in sys.modules and "__getattr__" not in vars(urllib3.http2)
from urllib3.http2 import extract_from_urllib3
assert urllib3.http2.probe is sys.modules["urllib3.http2.probe"]
"""

_URLLIB3_FIRST = """
import sys, urllib3
real = sys.modules["urllib3.http2"]
from sts_bridge.s3.transport import StoreConnection
StoreConnection("http://127.0.0.1:9", maxsize=1, stall_timeout=1.0).close()
assert sys.modules["urllib3.http2"] is real and "inject_into_urllib3" in vars(real)
"""


@pytest.mark.parametrize(
    "script", [_HTTP2_DEFERRED, _URLLIB3_FIRST], ids=["fresh", "urllib3-first"]
)
def test_urllib3_http2_init_runs_only_when_asked_for(script: str) -> None:
    # A fresh interpreter each: the import state of this one is shared by every test.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
