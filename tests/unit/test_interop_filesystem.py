"""WorkspaceFileSystem without the platform: paths, confinement, credentials, pickling.

A loopback HTTP server counts the requests that reach "S3", so "refused
before any request" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import http.server
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import fsspec
import pytest

from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.errors import InvalidKeyError, StsBridgeError
from sts_bridge.interop.aiobotocore_session import aio_credentials
from sts_bridge.interop.filesystem import WorkspaceFileSystem
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.signed_http import S3Http
from sts_bridge.s3.transport import ConnectionPools


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def _answer(self) -> None:
        type(self).hits.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def s3_endpoint() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Counter,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class CountingSource:
    name: str
    endpoint_url: str
    bucket: str = "bkt"
    prefix: str = "team/"
    region: str = "us-east-1"
    addressing_style: str = "path"
    verify: bool | str = True
    lifetime: float = 900.0
    delay: float = 0.0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    expiries: dict[str, datetime] = field(default_factory=dict)  # access key -> expiry

    def credentials(self) -> S3Credentials:
        with self.lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.delay)
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(seconds=self.lifetime)
        self.expiries[f"AK{n}"] = expiry
        return S3Credentials(
            f"AK{n}", "secret-key-value", "session-token-value", expiry, now
        )  # fmt: skip


@pytest.fixture
def registered(
    s3_endpoint: tuple[str, list[str]], register_workspace: Callable[..., object]
) -> Iterator[CountingSource]:
    source = CountingSource("unit-fs-ws", s3_endpoint[0])
    register_workspace(source)
    WorkspaceFileSystem.clear_instance_cache()
    try:
        yield source
    finally:
        WorkspaceFileSystem.clear_instance_cache()


def test_the_protocol_is_registered_with_fsspec() -> None:
    assert fsspec.get_filesystem_class("workspace") is WorkspaceFileSystem


def test_paths_strip_and_map_to_the_workspace_prefix(registered: CountingSource) -> None:
    fs = WorkspaceFileSystem()
    assert fs._strip_protocol("workspace://unit-fs-ws/a/b/") == "unit-fs-ws/a/b"
    assert fs.unstrip_protocol("unit-fs-ws/a/b") == "workspace://unit-fs-ws/a/b"
    _, s3_path, name = fs._object("workspace://unit-fs-ws/a/b")
    assert (s3_path, name) == ("bkt/team/a/b", "unit-fs-ws")
    assert fs._folder("workspace://unit-fs-ws")[1] == "bkt/team"
    assert fs._back("unit-fs-ws", "bkt/team/a/b") == "unit-fs-ws/a/b"
    assert fs._back("unit-fs-ws", "bkt/team") == "unit-fs-ws"
    with pytest.raises(InvalidKeyError):
        fs._back("unit-fs-ws", "bkt/other/a")  # a path outside the prefix never comes back


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "a//b", "./a", "a/./b", "/abs", "a\\b", "a/\nb"],
)
def test_unsafe_paths_are_refused_before_any_request(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]], path: str
) -> None:
    _, hits = s3_endpoint
    url = f"workspace://unit-fs-ws/{path}"
    fs = WorkspaceFileSystem()
    for call in (
        lambda: fs.cat_file(url),
        lambda: fs.pipe_file(url, b"x"),
        lambda: fs.info(url),
        lambda: fs.rm(url),
        lambda: fsspec.open(url, "wb").open(),
    ):
        with pytest.raises(InvalidKeyError):
            call()
    assert hits == []
    assert registered.calls == 0  # not even credentials were asked for


def test_a_safe_path_does_reach_the_server(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]]
) -> None:
    """The counterpart of the test above: the counting server does see requests."""
    _, hits = s3_endpoint
    with pytest.raises(FileNotFoundError):
        WorkspaceFileSystem().cat_file("workspace://unit-fs-ws/results/x.bin")
    assert any("/bkt/team/results/x.bin" in hit for hit in hits)
    assert registered.calls == 1


def test_a_pickled_filesystem_carries_no_credentials(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]]
) -> None:
    fs = WorkspaceFileSystem(api_url="http://api.example/core")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("workspace://unit-fs-ws/x")  # credentials live inside now
    data = pickle.dumps(fs)
    for secret in (b"secret-key-value", b"session-token-value", b"AK1"):
        assert secret not in data
    again = pickle.loads(data)  # noqa: S301 - our own bytes
    assert again.api_url == "http://api.example/core"
    assert again.source("unit-fs-ws") is registered  # resolved again, by name


def test_concurrent_coroutines_and_threads_share_one_exchange(
    s3_endpoint: tuple[str, list[str]],
) -> None:
    """32 coroutines needing credentials at once call the source once (the
    call runs in a worker thread, so the event loop is not blocked meanwhile)."""
    source = CountingSource("unit-fs-ws", s3_endpoint[0], delay=0.2)
    creds = aio_credentials(source)

    async def many() -> set[str]:
        frozen = await asyncio.gather(*(creds.get_frozen_credentials() for _ in range(32)))
        return {f.access_key for f in frozen}

    assert asyncio.run(many()) == {"AK1"}
    assert source.calls == 1


def test_short_credentials_are_refreshed_before_they_expire(
    s3_endpoint: tuple[str, list[str]],
) -> None:
    """Over two lifetimes of 3-second credentials, every credential served
    still has time to sign and send a request: none expired, none about to."""
    lifetime = 3.0
    source = CountingSource("unit-fs-ws", s3_endpoint[0], lifetime=lifetime)
    creds = aio_credentials(source)

    async def served_over(seconds: float) -> list[tuple[str, datetime]]:
        served = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            # measured from before the call: a slow event loop only adds time
            asked_at = datetime.now(timezone.utc)
            frozen = await creds.get_frozen_credentials()
            served.append((frozen.access_key, asked_at))
            await asyncio.sleep(0.05)
        return served

    served = asyncio.run(served_over(2.3 * lifetime))
    for key, asked_at in served:
        left = (source.expiries[key] - asked_at).total_seconds()
        assert left >= lifetime / 10, f"{key} was served {left:.2f} s before it expired"
    assert len({key for key, _ in served}) >= 3  # it did refresh, twice at least
    assert len(served) > 3 * source.calls  # once per lifetime, not per call


def _read_closing_when_held(
    fs: WorkspaceFileSystem,
    held: threading.Event,
    release: threading.Event,
    after_close: Callable[[], object],
) -> list[BaseException | None]:
    """A ``cat_file`` on another thread; once it is ``held`` (by the test's hook),
    ``close_connections()`` and ``after_close()`` here, then ``release`` it.
    Returns what the read ended in (``None``: it returned)."""
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            fs.cat_file("workspace://unit-fs-ws/results/x.bin")
            outcome.append(None)
        except BaseException as exc:  # the test reports which one
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        held.wait()
        fs.close_connections()
        after_close()
    finally:
        release.set()
        reader.join()
    return outcome


def test_closing_connections_while_a_call_is_between_its_steps(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]]
) -> None:
    """close_connections() on another thread just after a read looked its store up
    (held there by events): the read makes its object connections again and
    reaches the server, no KeyError."""
    _, hits = s3_endpoint
    fs = WorkspaceFileSystem()
    looked_up, closed = threading.Event(), threading.Event()
    store_of = fs._store

    def held_after_lookup(source: object) -> object:
        store = store_of(source)  # type: ignore[arg-type]
        looked_up.set()
        closed.wait()
        return store

    fs._store = held_after_lookup  # type: ignore[method-assign]
    outcome = _read_closing_when_held(fs, looked_up, closed, lambda: None)
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError), outcome
    assert any("/bkt/team/results/x.bin" in hit for hit in hits)


def test_a_call_holding_closed_object_connections_completes_on_fresh_ones(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]]
) -> None:
    """close_connections() on another thread after a read took its object reads
    and writes (held there by events), once they had connected: the read still
    reaches the server on fresh connections and ends in the store's answer
    (404: FileNotFoundError), never in an error about closed connections."""
    _, hits = s3_endpoint
    fs = WorkspaceFileSystem()
    with pytest.raises(FileNotFoundError):  # connected: its pool exists before the close
        fs.cat_file("workspace://unit-fs-ws/results/warm.bin")
    taken, closed = threading.Event(), threading.Event()
    objects_of = fs._objects_of

    def held_after_taking(name: str) -> object:
        objects = objects_of(name)
        taken.set()
        closed.wait()
        return objects

    fs._objects_of = held_after_taking  # type: ignore[method-assign]
    at_close: list[int] = []
    outcome = _read_closing_when_held(fs, taken, closed, lambda: at_close.append(len(hits)))
    hits_at_close = at_close[0]
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError), outcome
    assert any("/bkt/team/results/x.bin" in hit for hit in hits[hits_at_close:])


def test_a_signed_client_whose_borrowed_pools_were_closed_connects_anew(
    registered: CountingSource, s3_endpoint: tuple[str, list[str]]
) -> None:
    """The connection pools a transfer client borrowed are closed under it (a
    workspace closing): its next request goes out on a fresh pool and ends in
    the store's answer, like the one before the close."""
    _, hits = s3_endpoint
    pools = ConnectionPools()
    client = S3Http(registered, TransferConfig(), connections=1, pools=pools)
    with pytest.raises(StsBridgeError) as before:
        client.call("GET", "team/a.bin", "reading 'a.bin'")
    pools.close()
    with pytest.raises(StsBridgeError) as after:
        client.call("GET", "team/b.bin", "reading 'b.bin'")
    assert type(after.value) is type(before.value), after.value
    assert hits[-1] == "GET /bkt/team/b.bin"
    pools.close()
