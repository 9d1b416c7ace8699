"""TokenIntrospection against a scripted issuer on 127.0.0.1 (discovery + RFC 7662 endpoint).

The real identity provider's introspection is tested in
tests/integration/test_service_callers.py and test_results_service.py; here
the answers are chosen by the test to pin the cache rules: keyed by the
token's hash, bounded in size, never past ``exp``, one request for a burst.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from sts_bridge_devstack.ports import free_port

from sts_bridge.errors import CallerRefusedError
from sts_bridge.service import CallerVerifier, TokenIntrospection

AUDIENCE = "urn:example:service"
START = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


class ScriptedIssuer:
    """Discovery naming an introspection endpoint; answers from ``answers`` (token -> dict)."""

    def __init__(self, *, introspection: bool = True) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.answers: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str]] = []  # (Authorization header, token) per request
        self.hold: threading.Event | None = None
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document = {"issuer": issuer.url, "token_endpoint": f"{issuer.url}/token"}
                if introspection:
                    document["introspection_endpoint"] = f"{issuer.url}/introspect"
                self.answer(document)

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                token = form["token"][0]
                issuer.seen.append((self.headers.get("Authorization", ""), token))
                if issuer.hold is not None:
                    issuer.hold.wait()
                self.answer(issuer.answers.get(token, {"active": False}))

            def answer(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def active(self, token: str, **claims: Any) -> None:
        exp = int((START + timedelta(hours=1)).timestamp())
        self.answers[token] = {
            "active": True,
            "sub": "alice-sub",
            "aud": AUDIENCE,
            "exp": exp,
            "scope": "openid gep",
            **claims,
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer() -> Iterator[ScriptedIssuer]:
    running = ScriptedIssuer()
    try:
        yield running
    finally:
        running.stop()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def introspection(issuer: ScriptedIssuer, clock: Any, **kwargs: Any) -> TokenIntrospection:
    return TokenIntrospection(issuer.url, "the-service", "s3cret-x", clock=clock, **kwargs)


def test_an_active_token_is_checked_like_a_jwt(issuer: ScriptedIssuer) -> None:
    clock = Clock()
    issuer.active("opaque-alice", groups=["team-a"])
    issuer.active("opaque-other-aud", aud="urn:example:another")
    issuer.active("opaque-other-iss", iss="http://127.0.0.1:1")
    intro = introspection(issuer, clock)
    v = CallerVerifier(issuer.url, AUDIENCE, introspection=intro, clock=clock)

    alice = v.verify("opaque-alice")
    assert alice.subject == "alice-sub" and alice.scopes == {"openid", "gep"}
    assert alice.claims["groups"] == ["team-a"] and "active" not in alice.claims
    # client_secret_basic: the client's id and secret in the Authorization header
    expected = base64.b64encode(b"the-service:s3cret-x").decode()
    assert issuer.seen == [(f"Basic {expected}", "opaque-alice")]

    for token, why in {
        "opaque-other-aud": "not addressed",
        "opaque-other-iss": "another issuer",
        "opaque-unknown": "not active",
    }.items():
        with pytest.raises(CallerRefusedError) as refused:
            v.verify(token)
        assert refused.value.status == 401 and why in refused.value.message, token
    with pytest.raises(CallerRefusedError, match="neither a JWT nor"):
        v.verify("not a token")
    assert len(issuer.seen) == 4  # the malformed one never reached the issuer


def test_answers_are_cached_by_hash_within_bounds(issuer: ScriptedIssuer) -> None:
    clock = Clock()
    issuer.active("short-lived", exp=int((START + timedelta(seconds=5)).timestamp()))
    for name in ("tok-first-7f3a", "tok-second-7f3a", "tok-third-7f3a"):
        issuer.active(name)
    intro = introspection(issuer, clock, cache_seconds=3600, cache_size=2)

    intro.claims("short-lived")
    intro.claims("short-lived")
    assert intro.calls == 1
    clock.now = START + timedelta(seconds=6)  # past the token's exp: the entry is gone
    intro.claims("short-lived")
    assert intro.calls == 2

    for name in ("tok-first-7f3a", "tok-second-7f3a", "tok-third-7f3a", "tok-third-7f3a"):
        intro.claims(name)
    assert intro.calls == 5
    intro.claims("tok-first-7f3a")  # dropped for the third (two entries at most)
    assert intro.calls == 6

    with pytest.raises(CallerRefusedError):
        intro.claims("tok-inactive-7f3a")
    with pytest.raises(CallerRefusedError):
        intro.claims("tok-inactive-7f3a")  # an inactive answer is cached too
    assert intro.calls == 7
    held = repr(vars(intro))  # the cache holds hashes, never a token
    assert "7f3a" not in held and "s3cret" not in repr(intro)


def test_a_burst_with_one_token_makes_one_request(issuer: ScriptedIssuer) -> None:
    issuer.active("burst")
    threads = 8
    all_entered = threading.Event()
    count = [0]
    lock = threading.Lock()

    def clock() -> datetime:
        # every call of claims() reads the clock before deciding whether to ask
        with lock:
            count[0] += 1
            if count[0] >= threads:
                all_entered.set()
        return START

    # the issuer answers only once every thread has looked at the cache: without
    # the per-token wait, each of them would send its own request
    issuer.hold = all_entered
    intro = introspection(issuer, clock)
    results: list[Any] = []
    workers = [
        threading.Thread(target=lambda: results.append(intro.claims("burst")))
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == threads and all(r["sub"] == "alice-sub" for r in results)
    assert intro.calls == 1 and len(issuer.seen) == 1


def test_an_issuer_without_introspection_refuses_opaque_tokens() -> None:
    issuer = ScriptedIssuer(introspection=False)
    try:
        v = CallerVerifier(
            issuer.url, AUDIENCE, introspection=introspection(issuer, Clock()), clock=Clock()
        )
        with pytest.raises(CallerRefusedError, match="offers no introspection") as refused:
            v.verify("opaque")
        assert refused.value.status == 401
    finally:
        issuer.stop()
