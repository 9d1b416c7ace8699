"""Cache files are 0600 in 0700 directories, also when something made them looser."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sts_bridge._files import atomic_write, private_directory
from sts_bridge.auth.base import Token
from sts_bridge.auth.cache import TokenCache


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_cache_directories_are_created_0700(tmp_path: Path, loose_umask: None) -> None:
    target = tmp_path / "cache" / "sts-bridge" / "tokens" / "t.json"
    atomic_write(target, b"{}")
    assert mode(target) == 0o600
    for folder in (target.parent, target.parent.parent, tmp_path / "cache"):
        assert mode(folder) == 0o700, folder


def test_loose_cache_directories_are_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "sts-bridge"
    (cache / "sts").mkdir(parents=True)
    cache.chmod(0o755)
    (cache / "sts").chmod(0o775)
    tmp_path.chmod(0o755)
    atomic_write(cache / "sts" / "c.json", b"{}")
    assert mode(cache) == 0o700 and mode(cache / "sts") == 0o700
    assert mode(tmp_path) == 0o755  # above the cache dir: not ours to change
    assert "tightened" in caplog.text


def test_private_directory_leaves_a_tight_directory_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "a" / "b"
    private_directory(folder)
    private_directory(folder)
    assert mode(folder) == 0o700
    assert "tightened" not in caplog.text


def test_a_world_readable_token_cache_is_repaired_and_still_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(tmp_path / "cache", issuer="https://idp.example", client_id="cli")
    token = Token(
        access_token="a" * 40,
        refresh_token="r" * 40,
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    cache.save(token)
    cache.path.chmod(0o644)
    cache.path.parent.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        loaded = cache.load()
    assert loaded is not None and loaded.refresh_token == "r" * 40
    assert mode(cache.path) == 0o600
    assert mode(cache.path.parent) == 0o700
    assert "0644" in caplog.text and "0600" in caplog.text
    assert "r" * 40 not in caplog.text
