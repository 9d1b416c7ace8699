"""TokenCredentials: state, leeway, locks, the token cache, clock skew (no network)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sts_bridge.auth import Token, TokenCache, TokenCredentials, unverified_claims
from sts_bridge.clock import CredentialState
from sts_bridge.errors import ClockSkewError

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def jwt_for(payload: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(payload)}.sig"


class Counting(TokenCredentials):
    """Issues token-1, token-2, ... that live ``ttl`` seconds."""

    def __init__(self, ttl: float = 5.0, delay: float = 0.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ttl = ttl
        self.delay = delay
        self.fetches = 0
        self.seen_refresh: list[str | None] = []

    def _fetch(self, current: Token | None) -> Token:
        time.sleep(self.delay)
        self.fetches += 1
        self.seen_refresh.append(current.refresh_token if current else None)
        now = self.now()
        return Token(
            access_token=f"token-{self.fetches}-{id(self)}",
            expiry=now + timedelta(seconds=self.ttl),
            refresh_token=f"rt-{self.fetches}",
            obtained_at=now,
        )


def test_fresh_then_stale_with_leeway() -> None:
    clock = FakeClock()
    creds = Counting(ttl=3600, leeway=60, clock=clock)
    assert creds.state == CredentialState.INVALID
    first = creds.token()
    assert creds.state is CredentialState.FRESH and creds.expiry == T0 + timedelta(hours=1)
    clock.advance(3600 - 61)
    assert creds.token() == first
    clock.advance(2)
    assert creds.state == CredentialState.INVALID
    assert creds.token() != first
    assert creds.fetches == 2


def test_leeway_is_capped_for_short_tokens() -> None:
    """authlib's 60 s leeway would make a 5-second token expired on arrival."""
    clock = FakeClock()
    creds = Counting(ttl=5, leeway=60, clock=clock)
    first = creds.token()
    assert creds.token() == first and creds.fetches == 1
    clock.advance(2.4)
    assert creds.token() == first
    clock.advance(0.2)
    assert creds.token() != first


def test_refresh_and_invalidate() -> None:
    creds = Counting(clock=FakeClock(), leeway=1)
    first = creds.token()
    creds.refresh()
    assert creds.token() != first and creds.fetches == 2
    creds.invalidate()
    assert creds.state == CredentialState.INVALID
    creds.token()
    assert creds.fetches == 3
    assert creds.seen_refresh[-1] == "rt-2"  # the refresh token survives invalidate()


def test_many_threads_one_refresh() -> None:
    creds = Counting(delay=0.05, leeway=1)
    barrier = threading.Barrier(32)
    results: list[str] = []

    def ask() -> None:
        barrier.wait()
        results.append(creds.token())

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert creds.fetches == 1 and len(set(results)) == 1


def test_shared_cache_one_fetch_and_newest_refresh_token(tmp_path: Path) -> None:
    clock = FakeClock()

    def make() -> Counting:
        cache = TokenCache(tmp_path, issuer="https://idp", client_id="cli", scopes=["b", "a"])
        return Counting(ttl=10, leeway=1, clock=clock, cache=cache)

    one, two = make(), make()
    token = one.token()
    assert two.token() == token and two.fetches == 0
    assert one.cache is not None
    assert stat.S_IMODE(one.cache.path.stat().st_mode) == 0o600
    assert token not in repr(one.cache) and "rt-1" not in repr(one)
    clock.advance(9.5)
    renewed = two.token()  # two refreshes, using the refresh token one stored
    assert two.seen_refresh == ["rt-1"]
    assert one.token() == renewed and one.fetches == 1  # one adopts it, no fetch
    # refresh() after a 401: adopt a token another process already replaced...
    one.refresh()
    assert one.fetches == 2
    two.refresh()  # one already replaced the token two had: adopt it, no fetch
    assert two.fetches == 1 and two.token() == one.token()
    two.refresh()  # now two's token is the cached one: really refresh, with one's newest RT
    assert two.fetches == 2 and two.seen_refresh[-1] == "rt-2"


def test_cache_key_separates_clients(tmp_path: Path) -> None:
    a = TokenCache(tmp_path, issuer="https://idp", client_id="a")
    b = TokenCache(tmp_path, issuer="https://idp", client_id="b")
    c = TokenCache(tmp_path, issuer="https://idp/", client_id="a", scopes=())
    assert a.path != b.path and a.path == c.path


def test_corrupt_or_foreign_cache_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(tmp_path, issuer="https://idp", client_id="cli")
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{garbage")
    creds = Counting(leeway=1, cache=cache)
    with caplog.at_level(logging.WARNING):
        creds.token()
    assert "corrupt token cache" in caplog.text
    assert cache.load() is not None  # replaced by a good one
    document = json.loads(cache.path.read_text())
    document["key"]["client_id"] = "someone-else"
    cache.path.write_text(json.dumps(document))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cache.load() is None
    assert "another client" in caplog.text
    assert cache.delete() and not cache.delete()


def test_token_repr_and_dict_round_trip() -> None:
    token = Token(
        access_token="AT-secret",
        refresh_token="RT-secret",
        id_token="ID-secret",
        expiry=T0,
        obtained_at=T0 - timedelta(seconds=5),
    )
    assert "secret" not in repr(token)
    assert Token.from_dict(token.to_dict()) == token


def test_token_from_response_uses_expires_in_then_exp() -> None:
    token = Token.from_response({"access_token": "x", "expires_in": 30}, now=T0)
    assert token.expiry == T0 + timedelta(seconds=30)
    jwt = jwt_for({"exp": int((T0 + timedelta(minutes=5)).timestamp())})
    assert Token.from_response({"access_token": jwt}, now=T0).expiry == T0 + timedelta(minutes=5)
    assert Token.from_response({"access_token": "opaque"}, now=T0).expiry is None
    with pytest.raises(ValueError):
        Token.from_response({"token_type": "Bearer"}, now=T0)


class Issuing(TokenCredentials):
    def __init__(self, payload: dict[str, object], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.payload = payload

    def _fetch(self, current: Token | None) -> Token:
        return Token(access_token=jwt_for(self.payload), expiry=self.now() + timedelta(hours=1))


def test_clock_skew_detected_on_arrival() -> None:
    clock = FakeClock()
    now = int(T0.timestamp())
    with pytest.raises(ClockSkewError, match="future"):
        Issuing({"iat": now + 600, "exp": now + 4200}, clock=clock, leeway=60).token()
    with pytest.raises(ClockSkewError, match="already expired"):
        Issuing({"iat": now - 7200, "exp": now - 3600}, clock=clock).token()
    creds = Issuing({"iat": now + 30, "exp": now + 3600, "sub": "alice"}, clock=clock)
    creds.token()  # within the leeway
    assert creds.subject == "alice" and creds.claims["sub"] == "alice"


def test_unverified_claims_never_raises() -> None:
    assert unverified_claims("not-a-jwt") == {}
    assert unverified_claims("a.b.c") == {}
    assert unverified_claims(None) == {}
    assert unverified_claims(jwt_for({"sub": "x"})) == {"sub": "x"}


def test_negative_leeway_refused() -> None:
    with pytest.raises(ValueError):
        Counting(leeway=-1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_cache_file_lock_serialises_processes(tmp_path: Path) -> None:
    """Two processes on one stale cache: the second adopts the first one's token."""
    cache = TokenCache(tmp_path, issuer="https://idp", client_id="cli")
    marker = tmp_path / "fetches"
    marker.write_text("")

    class Slow(Counting):
        def _fetch(self, current: Token | None) -> Token:
            with open(marker, "a") as handle:
                handle.write("x")
            time.sleep(0.3)
            return super()._fetch(current)

    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                Slow(leeway=1, cache=cache).token()
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert marker.read_text() == "x"
