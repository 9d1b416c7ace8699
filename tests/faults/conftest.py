"""Fixtures of the fault suite (helpers in faults_support.py): the local
platform seen through fault proxies, a CLI environment per test, a checker
that reads the bucket directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_support import Checker, Proxied, cli_env, make_checker, start_proxied, stop_proxied


@pytest.fixture(scope="session")
def proxied(local_platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    p = start_proxied(local_platform, tmp_path_factory.mktemp("proxied"))
    try:
        yield p
    finally:
        stop_proxied(p)


@pytest.fixture(scope="session")
def proxied_short(
    short_lived_platform: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxied]:
    """Like ``proxied`` over the platform with 5 s tokens and STS credentials."""
    p = start_proxied(short_lived_platform, tmp_path_factory.mktemp("proxied-short"))
    try:
        yield p
    finally:
        stop_proxied(p)


@pytest.fixture
def faults(proxied: Proxied, tmp_path: Path) -> Iterator[Proxied]:
    """``proxied`` healed before and after the test, with this test's CLI env."""
    proxied.heal()
    proxied.env_for_test = cli_env(proxied, tmp_path)  # type: ignore[attr-defined]
    try:
        yield proxied
    finally:
        proxied.heal()


@pytest.fixture
def short_faults(proxied_short: Proxied, tmp_path: Path) -> Iterator[Proxied]:
    """``proxied_short`` healed before and after the test, with this test's CLI env."""
    proxied_short.heal()
    proxied_short.env_for_test = cli_env(proxied_short, tmp_path)  # type: ignore[attr-defined]
    try:
        yield proxied_short
    finally:
        proxied_short.heal()


@pytest.fixture(scope="session")
def readers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Any]:
    return {}


@pytest.fixture
def checker(local_platform: Any, readers: dict[int, Any], tmp_path: Path) -> Checker:
    return make_checker(local_platform, readers, tmp_path / "checker-cache")
