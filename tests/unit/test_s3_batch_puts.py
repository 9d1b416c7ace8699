"""Batches of small PUTs from an event loop (``BatchPuts``) against loopback
servers that answer as scripted: what is stored from the loop, and what is
handed to the threads' way (``fallback``) instead."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fake_targets import content_length, read_request_head

from sts_bridge.s3.batch_puts import IN_FLIGHT, SMALLEST_FALLBACK_BODY, in_flight_cap
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.objects import ObjectIO

OK = b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n'


@dataclass
class _Creds:
    access_key: str = "AKIDEXAMPLE"
    secret_key: str = "not-a-secret"
    token: str | None = "session-token"


class _Target:
    bucket, prefix, region, addressing_style = "b", "p/", "us-east-1", "path"

    def __init__(self, endpoint_url: str, verify: bool | str = True) -> None:
        self.endpoint_url, self.verify = endpoint_url, verify
        self.creds = _Creds()

    def credentials(self) -> _Creds:
        return self.creds


class _Store:
    """A loopback server: ``answer(n, head, body)`` gives the n-th request's
    answer bytes (``None``: say nothing, hold the connection) and whether to
    close the connection after it."""

    def __init__(self, answer: Callable[[int, bytes, bytes], tuple[bytes | None, bool]]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.client_closed = threading.Semaphore(0)  # a release per connection the client ended
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as reader:
            while True:
                head = read_request_head(reader)
                if head is None:
                    self.client_closed.release()
                    return
                body = reader.read(content_length(head))
                with self._lock:
                    n = len(self.requests)
                    self.requests.append((head, body))
                answer, close = self.answer(n, head, body)
                if answer is None:
                    self.release.wait()
                    return
                conn.sendall(answer)
                if close:
                    return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.listener.close()


@pytest.fixture
def store() -> Iterator[Callable[..., _Store]]:
    made: list[_Store] = []

    def make(answer: Callable[[int, bytes, bytes], tuple[bytes | None, bool]]) -> _Store:
        made.append(_Store(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _always(answer: bytes | None, close: bool = False) -> Any:
    return lambda n, head, body: (answer, close)


def _batch(
    target: _Target, items: list[tuple[str, bytes]], *, stall: float = 5, **kw: Any
) -> tuple[list[Any], list[int], ObjectIO]:
    """``put_each`` of ``items`` on a fresh event loop; the fallback records
    the items handed to it and answers ``"threads-<i>"``."""
    objects = ObjectIO(target, TransferConfig(stall_timeout=stall))  # type: ignore[arg-type]
    handed: list[int] = []

    async def fallback(i: int) -> str:
        handed.append(i)
        return f"threads-{i}"

    async def run() -> list[Any]:
        return await objects.batch_puts.put_each(items, fallback, **kw)

    try:
        return asyncio.run(run()), sorted(handed), objects
    finally:
        objects.close()


def _items(n: int, size: int = 100) -> list[tuple[str, bytes]]:
    return [(f"p/k{i}", bytes([i % 256]) * size) for i in range(n)]


def test_plain_answers_are_stored_from_the_loop_over_kept_connections(
    store: Callable[..., _Store],
) -> None:
    server = store(_always(OK))
    items = _items(20)
    results, handed, _ = _batch(_Target(server.url), items, limit=4)
    assert results == ["e"] * 20 and handed == []
    assert server.connections <= 4  # kept alive: one per PUT in flight at most
    sent = dict((head.split(b" ")[1].decode(), (head, body)) for head, body in server.requests)
    for key, body in items:
        head, got = sent[f"/b/{key}"]
        assert got == body
        lines = head.decode().split("\r\n")
        assert lines[0] == f"PUT /b/{key} HTTP/1.1"
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        digest = hashlib.sha256(body).hexdigest()
        assert fields["Host"] == f"127.0.0.1:{server.port}"
        assert fields["Content-Length"] == str(len(body))
        assert fields["x-amz-content-sha256"] == fields["x-amz-meta-sha256"] == digest
        assert fields["x-amz-security-token"] == "session-token"
        assert fields["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")


def test_the_same_request_as_the_threads_way(store: Callable[..., _Store]) -> None:
    """The loop sends what ``ObjectIO.put`` sends (the same signed headers),
    so handing a PUT over changes nothing the store sees."""
    server = store(_always(OK))
    target = _Target(server.url)
    _batch(target, [("p/same", b"body")])
    objects = ObjectIO(target)  # type: ignore[arg-type]
    try:
        objects.put("p/same", b"body")
    finally:
        objects.close()
    (loop_head, loop_body), (thread_head, thread_body) = server.requests

    def fields(head: bytes) -> dict[str, str]:
        lines = head.decode().split("\r\n")[1:]
        out = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
        for varying in ("x-amz-date", "authorization", "user-agent", "accept-encoding"):
            out.pop(varying, None)
        return out

    assert loop_head.split(b"\r\n")[0] == thread_head.split(b"\r\n")[0]
    assert fields(loop_head) == fields(thread_head) and loop_body == thread_body


ODD_ANSWERS = {
    "403": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    "503 with a body": b"HTTP/1.1 503 Slow Down\r\nContent-Length: 5\r\n\r\nslow!",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "no length": b"HTTP/1.1 200 OK\r\nETag: x\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx",
    "long answer": b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n" + b"x" * 99999,
    "broke off": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "not HTTP": b"SSH-2.0-OpenSSH\r\n\r\n",
    "HTTP/2": b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
    "status 2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "closed without a word": b"",
    "a head longer than 64 KiB": b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("answer", ODD_ANSWERS.values(), ids=ODD_ANSWERS.keys())
def test_any_other_answer_hands_the_put_to_the_threads(
    store: Callable[..., _Store], answer: bytes
) -> None:
    server = store(_always(answer, close=True))
    results, handed, _ = _batch(_Target(server.url), _items(3), limit=1)
    assert handed == [0, 1, 2]
    assert results == ["threads-0", "threads-1", "threads-2"]


def test_a_connection_the_answer_closes_is_not_used_again(store: Callable[..., _Store]) -> None:
    """``Connection: close``: the PUT is stored, and the client ends the
    connection itself (the server here keeps its side open)."""
    closing = b'HTTP/1.1 200 OK\r\nETag: "e"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'
    server = store(_always(closing))
    gc.collect()  # what earlier tests left says so now, not below
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", ResourceWarning)
        results, handed, _ = _batch(_Target(server.url), _items(5), limit=1)
        gc.collect()  # a transport dropped unclosed says so when collected
    assert results == ["e"] * 5 and handed == []
    assert server.connections == 5
    assert all(server.client_closed.acquire(timeout=5) for _ in range(5))
    assert [str(w.message) for w in said if w.category is ResourceWarning] == []


def test_a_connection_the_store_closed_while_idle_is_not_used(
    store: Callable[..., _Store],
) -> None:
    """Kept-alive connections the store closed between two batches are
    dropped, not written to: the second batch is stored from the loop too."""
    server = store(_always(OK, close=True))  # answers, then closes: idle ones die
    target = _Target(server.url)
    objects = ObjectIO(target)  # type: ignore[arg-type]
    handed: list[int] = []

    async def fallback(i: int) -> str:
        handed.append(i)
        return "threads"

    async def two_batches() -> list[Any]:
        first = await objects.batch_puts.put_each(_items(3), fallback, limit=3)
        await asyncio.sleep(0.05)  # the store's FINs arrive
        return first + await objects.batch_puts.put_each(_items(3), fallback, limit=3)

    try:
        assert asyncio.run(two_batches()) == ["e"] * 6 and handed == []
    finally:
        objects.close()
    assert server.connections == 6


def test_a_store_that_says_nothing_is_a_stall_handed_to_the_threads(
    store: Callable[..., _Store],
) -> None:
    server = store(_always(None))  # reads the request, never answers
    results, handed, _ = _batch(_Target(server.url), _items(2), stall=0.3, limit=2)
    assert handed == [0, 1] and results == ["threads-0", "threads-1"]


def test_a_refused_connection_is_handed_to_the_threads() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    results, handed, _ = _batch(_Target(f"http://127.0.0.1:{port}"), _items(2))
    assert handed == [0, 1] and results == ["threads-0", "threads-1"]


def test_bodies_from_the_stall_rules_size_up_take_the_threads_way(
    store: Callable[..., _Store],
) -> None:
    server = store(_always(OK))
    items = [
        ("p/small", b"x" * (SMALLEST_FALLBACK_BODY - 1)),
        ("p/big", b"x" * SMALLEST_FALLBACK_BODY),
    ]
    results, handed, _ = _batch(_Target(server.url), items)
    assert results == ["e", "threads-1"] and handed == [1]
    assert len(server.requests) == 1


def test_behind_a_proxy_every_put_takes_the_threads_way(
    store: Callable[..., _Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop connects only directly: a proxy the environment names for the
    endpoint is the transport's (CONNECT, absolute URLs), so the threads send."""
    server = store(_always(OK))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    results, handed, _ = _batch(_Target(server.url), _items(3))
    assert handed == [0, 1, 2] and server.requests == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    results, handed, _ = _batch(_Target(server.url), _items(3))
    assert handed == [] and results == ["e"] * 3


def test_unverified_tls_takes_the_threads_way(store: Callable[..., _Store]) -> None:
    server = store(_always(OK))
    target = _Target(f"https://127.0.0.1:{server.port}", verify=False)
    _, handed, _ = _batch(target, _items(2))
    assert handed == [0, 1] and server.requests == []


def test_at_most_limit_in_flight_and_never_more_than_in_flight(
    store: Callable[..., _Store],
) -> None:
    in_flight, most = [0], [0]
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=5)

    def answer(n: int, head: bytes, body: bytes) -> tuple[bytes, bool]:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        if n < 3:
            gate.wait()  # the first three meet: three were in flight together
        with lock:
            in_flight[0] -= 1
        return OK, False

    server = store(answer)
    results, handed, _ = _batch(_Target(server.url), _items(12), limit=3)
    assert results == ["e"] * 12 and handed == [] and most[0] == 3
    assert server.connections == 3
    assert IN_FLIGHT >= 128  # radosgw's discount needs hundreds together


def test_with_stop_at_error_nothing_starts_after_a_failure(store: Callable[..., _Store]) -> None:
    server = store(_always(ODD_ANSWERS["403"]))
    objects = ObjectIO(_Target(server.url))  # type: ignore[arg-type]

    async def fallback(i: int) -> str:
        raise PermissionError(f"refused {i}")

    async def run() -> list[Any]:
        return await objects.batch_puts.put_each(_items(10), fallback, limit=1, stop_at_error=True)

    try:
        with pytest.raises(PermissionError, match="refused 0"):
            asyncio.run(run())
    finally:
        objects.close()
    assert len(server.requests) == 1


def test_without_stop_at_error_each_failure_is_its_items_answer(
    store: Callable[..., _Store],
) -> None:
    server = store(lambda n, head, body: (ODD_ANSWERS["403"] if b"/b/p/k1 " in head else OK, False))
    objects = ObjectIO(_Target(server.url))  # type: ignore[arg-type]

    async def fallback(i: int) -> str:
        raise PermissionError(f"refused {i}")

    async def run() -> list[Any]:
        return await objects.batch_puts.put_each(_items(3), fallback, limit=1)

    try:
        results = asyncio.run(run())
    finally:
        objects.close()
    assert results[0] == results[2] == "e" and isinstance(results[1], PermissionError)


def test_credentials_that_cannot_be_had_are_the_threads_ways_to_report(
    store: Callable[..., _Store],
) -> None:
    server = store(_always(OK))
    target = _Target(server.url)

    def no_credentials() -> _Creds:
        raise RuntimeError("log in again")

    target.credentials = no_credentials  # type: ignore[method-assign]
    _, handed, _ = _batch(target, _items(2))
    assert handed == [0, 1] and server.requests == []


def test_a_cancelled_batch_closes_its_connections(store: Callable[..., _Store]) -> None:
    server = store(_always(None))  # never answers: the PUTs stay in flight
    objects = ObjectIO(_Target(server.url))  # type: ignore[arg-type]

    async def fallback(i: int) -> str:
        raise AssertionError("cancelled PUTs are not handed over")

    async def run() -> None:
        task = asyncio.ensure_future(objects.batch_puts.put_each(_items(4), fallback, limit=4))
        while len(server.requests) < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert objects.batch_puts._idle == []

    try:
        asyncio.run(run())
    finally:
        objects.close()


@pytest.mark.parametrize(("soft", "cap"), [(20000, IN_FLIGHT), (1024, 128), (256, 32), (64, 16)])
def test_few_open_files_allowed_mean_fewer_in_flight(
    monkeypatch: pytest.MonkeyPatch, soft: int, cap: int
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert in_flight_cap() == cap


def test_after_a_refusal_the_signer_is_asked_for_again(store: Callable[..., _Store]) -> None:
    """A store that refuses (expired credentials, say) makes the next PUT ask
    for credentials anew instead of signing with the same ones for seconds."""
    server = store(lambda n, head, body: (ODD_ANSWERS["403"] if n == 0 else OK, False))
    target = _Target(server.url)
    asked = []
    target.credentials = lambda: asked.append(1) or target.creds  # type: ignore[method-assign]
    results, handed, _ = _batch(target, _items(3), limit=1)
    assert handed == [0] and results[1:] == ["e", "e"]
    assert len(asked) == 2
