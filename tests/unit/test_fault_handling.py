"""Units of the fault handling (issue 11): refused credentials are replaced once,
the stall timeout knob, include/exclude pattern checks, folder prefixes."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sts_bridge.credentials.cache import CredentialCache
from sts_bridge.credentials.refreshing import RefreshingS3Credentials, S3Credentials
from sts_bridge.errors import InvalidKeyError
from sts_bridge.s3.config import DEFAULT_STALL_TIMEOUT, stall_timeout
from sts_bridge.s3.keys import folder_prefix
from sts_bridge.s3.signed_http import credentials_refused
from sts_bridge.s3.upload import check_pattern

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class Numbered:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> S3Credentials:
        with self.lock:
            self.calls += 1
            n = self.calls
        return S3Credentials(f"AK{n}", f"sk{n}", f"tk{n}", T0 + timedelta(seconds=900), T0)


def test_refused_credentials_are_replaced_once_across_threads() -> None:
    fetcher = Numbered()
    creds = RefreshingS3Credentials(fetcher, clock=lambda: T0)
    refused = creds.get()
    results: list[S3Credentials] = []
    threads = [
        threading.Thread(target=lambda: results.append(creds.replace_refused(refused)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert fetcher.calls == 2  # the first set, then exactly one replacement
    assert {r.access_key for r in results} == {"AK2"}
    assert creds.get().access_key == "AK2"


def test_refused_credentials_are_dropped_from_the_cache(tmp_path: Path) -> None:
    fetcher = Numbered()
    cache = CredentialCache(tmp_path, api_url="http://api", workspace="w", subject="s")
    first = RefreshingS3Credentials(fetcher, clock=lambda: T0, store=cache)
    refused = first.get()
    assert cache.load() == refused
    # another process starting now reads the same (refused) set from the cache
    second = RefreshingS3Credentials(fetcher, clock=lambda: T0, store=cache)
    assert second.get() == refused and fetcher.calls == 1
    new = second.replace_refused(refused)
    assert new.access_key == "AK2" and cache.load() == new
    # the first process is refused too: it adopts what the second cached, no exchange
    assert first.replace_refused(refused) == new and fetcher.calls == 2


@pytest.mark.parametrize(
    ("code", "status", "refused"),
    [
        ("InvalidAccessKeyId", 403, True),
        ("SignatureDoesNotMatch", 403, True),
        ("ExpiredToken", 400, True),
        ("AccessDenied", 403, True),
        ("", 403, True),  # HEAD: no body
        ("NoSuchKey", 404, False),
        ("SlowDown", 503, False),
    ],
)
def test_which_errors_mean_bad_credentials(code: str, status: int, refused: bool) -> None:
    assert credentials_refused(code, status) is refused


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", DEFAULT_STALL_TIMEOUT), ("2", 2.0), ("0.5", 0.5), ("0", DEFAULT_STALL_TIMEOUT),
     ("nan", DEFAULT_STALL_TIMEOUT), ("-3", DEFAULT_STALL_TIMEOUT), ("x", DEFAULT_STALL_TIMEOUT)],
)  # fmt: skip
def test_stall_timeout_knob(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    monkeypatch.setenv("STS_BRIDGE_STALL_TIMEOUT", value)
    assert stall_timeout() == expected


@pytest.mark.parametrize("pattern", ["[", "*.[ch", "a[!", "[]", ""])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_pattern(pattern)


@pytest.mark.parametrize("pattern", ["*.tif", "[ab]*", "[!x].txt", "[]]", "[[]x", "a/*/b"])
def test_valid_patterns(pattern: str) -> None:
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("folder", "expected"), [("", ""), ("/", ""), ("a", "a/"), ("a/", "a/"), ("a/b", "a/b/")]
)
def test_folder_prefix(folder: str, expected: str) -> None:
    assert folder_prefix(folder) == expected


@pytest.mark.parametrize("folder", ["//", "///", "a//", "//a", "/a", "a/../", "a\\b"])
def test_folder_prefix_refuses_empty_segments(folder: str) -> None:
    with pytest.raises(InvalidKeyError):
        folder_prefix(folder)


def test_credentials_cache_lock_held_too_long_is_passed_by(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 20: a process stopped while holding the lock (longer than any
    exchange lasts) does not stop the others: they go on without it."""
    import fcntl
    import os

    cache = CredentialCache(
        tmp_path, api_url="http://api", workspace="w", subject="s", lock_timeout=0.2
    )
    cache.lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = os.open(cache.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file description: another holder
        entered = False
        with cache.locked():
            entered = True
        assert entered
        assert "going on without it" in caplog.text
    finally:
        os.close(holder)
