"""RefreshingS3Credentials: windows, advisory failure, mandatory failure, races, store."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from sts_bridge.clock import CredentialState
from sts_bridge.credentials.cache import CredentialCache
from sts_bridge.credentials.refreshing import (
    RefreshingS3Credentials,
    S3Credentials,
    refresh_windows,
)
from sts_bridge.errors import ApiUnavailableError, CredentialsError
from sts_bridge.terrapi.storage_point import StoragePoint

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Fetcher:
    """Issues numbered credentials living ``lifetime`` seconds from the clock's now."""

    def __init__(self, clock: Clock, lifetime: float = 900.0, delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None  # set: each call waits until it opens
        self.entered = threading.Event()  # a call is under way
        self._lock = threading.Lock()

    def __call__(self) -> S3Credentials:
        with self._lock:
            self.calls += 1
            n = self.calls
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        return S3Credentials(
            f"AK{n}", f"secret{n}", f"token{n}", now + timedelta(seconds=self.lifetime), now
        )


def make(lifetime: float = 900.0, **kw: object) -> tuple[Clock, Fetcher, RefreshingS3Credentials]:
    clock = Clock()
    fetcher = Fetcher(clock, lifetime)
    return clock, fetcher, RefreshingS3Credentials(fetcher, clock=clock, **kw)  # type: ignore[arg-type]


def test_repr_hides_secret_and_token() -> None:
    creds = S3Credentials("AKID", "very-secret", "session-token", T0)
    text = repr(creds) + str(creds)
    assert "very-secret" not in text and "session-token" not in text
    assert "AKID" in text


def test_naive_expiry_refused() -> None:
    with pytest.raises(ValueError):
        S3Credentials("a", "b", None, datetime(2025, 1, 1))


def test_remaining_and_static_keys() -> None:
    assert S3Credentials("a", "b", None, T0 + timedelta(seconds=30)).remaining(T0) == 30
    assert S3Credentials("a", "b").remaining(T0) == float("inf")


def test_windows_for_15_minutes_and_scaled_down_for_5_seconds() -> None:
    assert refresh_windows(900, 120, 60) == (120, 60)
    adv, mand = refresh_windows(5, 120, 60)
    assert adv == pytest.approx(5 / 3) and mand == pytest.approx(5 / 6)
    assert refresh_windows(None, 120, 60) == (120, 60)


def test_fresh_credentials_are_reused_then_refreshed_in_advisory_window() -> None:
    clock, fetcher, rc = make()
    first = rc.get()
    assert fetcher.calls == 1 and rc.state is CredentialState.FRESH
    clock.advance(900 - 121)
    assert rc.get() is first and fetcher.calls == 1
    clock.advance(2)  # 119 s left: advisory window
    assert rc.state is CredentialState.STALE
    second = rc.get()
    assert second.access_key == "AK2" and fetcher.calls == 2


def test_advisory_failure_keeps_old_credentials_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    clock, fetcher, rc = make()
    first = rc.get()
    clock.advance(900 - 90)  # 90 s left: advisory, not mandatory
    fetcher.fail = ApiUnavailableError("API down")
    with caplog.at_level(logging.WARNING, logger="sts_bridge.credentials.refreshing"):
        assert rc.get() is first
    assert "using the current ones" in caplog.text
    assert "secret1" not in caplog.text and "token1" not in caplog.text


def test_mandatory_failure_raises() -> None:
    clock, fetcher, rc = make()
    rc.get()
    clock.advance(900 - 30)  # 30 s left: mandatory window
    fetcher.fail = ApiUnavailableError("API down")
    with pytest.raises(ApiUnavailableError):
        rc.get()
    fetcher.fail = RuntimeError("boom")
    with pytest.raises(CredentialsError, match="could not obtain STS credentials"):
        rc.get()


def test_expired_credentials_from_the_api_are_refused() -> None:
    clock = Clock()

    def fetch() -> S3Credentials:
        return S3Credentials("a", "b", None, clock() - timedelta(seconds=5), clock())

    with pytest.raises(CredentialsError, match="already expired"):
        RefreshingS3Credentials(fetch, clock=clock).get()


def test_32_threads_at_expiry_make_exactly_one_exchange() -> None:
    clock, fetcher, rc = make()
    fetcher.delay = 0.05
    rc.get()
    clock.advance(900)  # expired
    barrier = threading.Barrier(32)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(rc.get().access_key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fetcher.calls == 2  # the first get() and one refresh
    assert set(results) == {"AK2"}


def test_advisory_window_does_not_block_other_threads() -> None:
    clock, fetcher, rc = make()
    first = rc.get()
    clock.advance(900 - 100)
    fetcher.gate = threading.Event()  # the refresh holds the lock until the gate opens
    fetcher.entered.clear()
    refresher = threading.Thread(target=rc.get)
    refresher.start()
    assert fetcher.entered.wait(30)
    got: list[S3Credentials] = []
    other = threading.Thread(target=lambda: got.append(rc.get()))
    other.start()
    other.join(30)  # a hang guard only: get() answers at once or never
    waited_for_the_refresh = other.is_alive()
    fetcher.gate.set()
    refresher.join()
    other.join()
    assert not waited_for_the_refresh
    assert got == [first]  # lock busy: keep going with the current snapshot
    assert rc.get().access_key == "AK2"


def test_short_lived_credentials_are_not_refreshed_on_every_call() -> None:
    clock, fetcher, rc = make(lifetime=5)
    rc.get()
    clock.advance(3)  # 2 s left of 5: outside the 1.67 s advisory window
    rc.get()
    assert fetcher.calls == 1
    clock.advance(0.5)
    rc.get()
    assert fetcher.calls == 2


def test_credentials_for_buys_a_longer_life() -> None:
    clock, _fetcher, rc = make()
    rc.get()
    clock.advance(600)  # 300 s left
    assert rc.credentials_for(200).access_key == "AK1"
    assert rc.credentials_for(600).access_key == "AK2"
    # the platform caps lifetimes: asking for more returns the newest anyway...
    clock.advance(100)  # 800 s left of 900: a new exchange adds more than 10 %
    assert rc.credentials_for(3600).access_key == "AK3"
    # ...but only when that buys a meaningfully longer life (issue 7): AK3 is
    # as good as anything the platform can issue, so no exchange.
    assert rc.credentials_for(3600).access_key == "AK3"


def _store(tmp_path, clock: Clock) -> CredentialCache:  # type: ignore[no-untyped-def]
    store = CredentialCache(tmp_path, api_url="http://api/core", workspace="ws", subject="alice")
    store.storage_point = StoragePoint("ws", "bucket", "p/", "http://s3")
    return store


def test_store_shares_one_exchange_between_two_holders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    fetcher = Fetcher(clock)
    a = RefreshingS3Credentials(fetcher, clock=clock, store=_store(tmp_path, clock))
    b = RefreshingS3Credentials(fetcher, clock=clock, store=_store(tmp_path, clock))
    assert a.get() == b.get()
    assert fetcher.calls == 1
    assert (_store(tmp_path, clock).path.stat().st_mode & 0o777) == 0o600
    clock.advance(900 - 30)
    assert a.get().access_key == "AK2"
    assert b.get().access_key == "AK2" and fetcher.calls == 2
    # a forced refresh does not adopt what it already holds
    assert b.refresh().access_key == "AK3"


def test_corrupt_store_is_ignored_with_a_warning(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    store = _store(tmp_path, clock)
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    fetcher = Fetcher(clock)
    with caplog.at_level(logging.WARNING):
        creds = RefreshingS3Credentials(fetcher, clock=clock, store=store).get()
    assert creds.access_key == "AK1" and "corrupt" in caplog.text
    point, cached = _store(tmp_path, clock).load_entry()
    assert cached == creds and point is not None and point.bucket == "bucket"


def test_store_for_another_workspace_is_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    fetcher = Fetcher(clock)
    RefreshingS3Credentials(fetcher, clock=clock, store=_store(tmp_path, clock)).get()
    other = CredentialCache(tmp_path, api_url="http://api/core", workspace="ws", subject="bob")
    assert other.load() is None and other.path != _store(tmp_path, clock).path


# ---------------------------------------------------------------- credentials_for (issue 7)
def test_credentials_for_longer_than_the_platform_allows_refreshes_only_when_worthwhile() -> None:
    clock, fetcher, rc = make()  # 900 s credentials, presign asks for 1 h
    assert rc.credentials_for(3600).access_key == "AK1"
    assert fetcher.calls == 1
    # fresh: 900 s left, a new exchange would give 900 s too -> keep them
    assert rc.credentials_for(3600).access_key == "AK1"
    clock.advance(89)  # 811 s left: still within 90 % of the lifetime
    assert rc.credentials_for(3600).access_key == "AK1"
    assert fetcher.calls == 1
    clock.advance(2)  # 809 s left: a new exchange adds more than 10 %
    assert rc.credentials_for(3600).access_key == "AK2"
    assert fetcher.calls == 2
    assert rc.credentials_for(3600).access_key == "AK2"
    assert fetcher.calls == 2


def test_many_presigns_in_the_first_tenth_of_a_lifetime_make_one_exchange() -> None:
    clock, fetcher, rc = make()
    for _ in range(30):  # 30 presigns of 1 h (and 15 min) in 87 s
        rc.credentials_for(3600)
        rc.credentials_for(900)
        clock.advance(3)
    assert fetcher.calls == 1 and rc.exchanges == 1


def test_credentials_for_a_satisfiable_lifetime_is_still_exact() -> None:
    clock, fetcher, rc = make()
    rc.get()
    clock.advance(250)  # 650 s left
    assert rc.credentials_for(600).access_key == "AK1"  # 10 min: enough left
    clock.advance(60)  # 590 s left: a new exchange gives the whole 10 min
    assert rc.credentials_for(600).access_key == "AK2"
    assert fetcher.calls == 2


def test_credentials_for_with_unknown_lifetime_uses_min_lifetime() -> None:
    clock = Clock()
    fetcher = Fetcher(clock)
    old = S3Credentials("AK0", "s0", "t0", T0 + timedelta(seconds=850))  # no issued_at
    rc = RefreshingS3Credentials(fetcher, clock=clock, initial=old)  # type: ignore[arg-type]
    assert rc.credentials_for(600).access_key == "AK0"
    assert rc.credentials_for(3600).access_key == "AK1"  # lifetime unknown: try
    assert rc.credentials_for(3600).access_key == "AK1"  # now known: 900 s, fresh
    assert fetcher.calls == 1


def test_credentials_for_respects_the_mandatory_window() -> None:
    clock, fetcher, rc = make(lifetime=60)  # windows: 20 s / 10 s
    creds = rc.get()
    clock.advance(52)  # 8 s left: inside the mandatory window
    assert not rc.lives_long_enough(creds, 1)
    assert rc.refresh(min_lifetime=1).access_key == "AK2"
    assert fetcher.calls == 2


def test_credentials_for_adopts_what_another_process_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    fetcher = Fetcher(clock)
    a = RefreshingS3Credentials(fetcher, clock=clock, store=_store(tmp_path, clock))
    b = RefreshingS3Credentials(fetcher, clock=clock, store=_store(tmp_path, clock))
    assert a.credentials_for(3600) == b.credentials_for(3600)
    assert fetcher.calls == 1
    clock.advance(200)  # 700 s left: worth refreshing for a 1 h presign
    assert a.credentials_for(3600).access_key == "AK2"
    # b holds AK1 and finds AK2 (900 s lifetime, 900 s left) in the store: adopted
    assert b.credentials_for(3600).access_key == "AK2"
    assert fetcher.calls == 2
