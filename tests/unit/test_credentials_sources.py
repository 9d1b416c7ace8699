"""The WorkspaceSource hook: registration, resolution order, thread safety."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.credentials.sources import (
    WorkspaceSource,
    resolve_workspace,
    set_configuration_chain_opener,
)
from sts_bridge.errors import ConfigurationError

#: The ``register_workspace`` fixture (tests/conftest.py).
Register = Callable[[WorkspaceSource], Callable[[], None]]


@dataclass
class FakeSource:
    name: str
    bucket: str = "bkt"
    prefix: str = "p/"
    endpoint_url: str = "http://127.0.0.1:1"
    region: str = "us-east-1"
    addressing_style: str = "path"
    verify: bool | str = True

    def credentials(self) -> S3Credentials:
        return S3Credentials("AK", "SK")


def test_a_fake_satisfies_the_protocol() -> None:
    assert isinstance(FakeSource("ws"), WorkspaceSource)


def test_a_registered_source_wins_and_unregistering_restores_the_previous_one(
    register_workspace: Register,
) -> None:
    first, second = FakeSource("unit-ws"), FakeSource("unit-ws", bucket="other")
    register_workspace(first)
    assert resolve_workspace("unit-ws") is first
    undo_second = register_workspace(second)
    assert resolve_workspace("unit-ws") is second
    undo_second()
    undo_second()  # harmless twice
    assert resolve_workspace("unit-ws") is first


@pytest.fixture
def no_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment that names no platform (so the chain must fail)."""
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def test_without_registration_the_configuration_chain_is_asked(no_platform: None) -> None:
    with pytest.raises(ConfigurationError):
        resolve_workspace("unit-not-registered")


def test_the_configuration_chain_opener_builds_an_unregistered_name_once(
    no_platform: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERRAPI_URL", "http://127.0.0.1:9/unit-opener")
    opened: list[str] = []

    def opener(settings: object, name: str) -> FakeSource:
        opened.append(name)
        return FakeSource(name)

    previous = set_configuration_chain_opener(opener)
    try:
        first = resolve_workspace("unit-opened")
        assert first.name == "unit-opened" and resolve_workspace("unit-opened") is first
        assert opened == ["unit-opened"]
        set_configuration_chain_opener(None)
        with pytest.raises(ConfigurationError, match="no configuration chain"):
            resolve_workspace("unit-opened-without-opener")
    finally:
        set_configuration_chain_opener(previous)


def test_importing_the_sources_alone_sets_the_package_opener_without_client() -> None:
    # What an unpickling worker or fsspec does: import credentials.sources,
    # never client; the package __init__ has set the opener by then.
    code = (
        "import sys\n"
        "from sts_bridge.credentials.sources import set_configuration_chain_opener\n"
        "previous = set_configuration_chain_opener(None)\n"
        "print(previous.__module__, 'sts_bridge.client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["sts_bridge", "False"]


def test_registration_from_many_threads(no_platform: None, register_workspace: Register) -> None:
    sources = [FakeSource(f"unit-thread-{i % 4}") for i in range(64)]
    undos: list[Callable[[], None]] = []
    barrier = threading.Barrier(16)

    def work(chunk: list[FakeSource]) -> None:
        barrier.wait()
        for source in chunk:
            undos.append(register_workspace(source))
            assert resolve_workspace(source.name).name == source.name

    threads = [threading.Thread(target=work, args=(sources[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(undos) == 64
    for undo in undos:
        undo()
    for i in range(4):  # every registration is gone: the (empty) chain is asked
        with pytest.raises(ConfigurationError):
            resolve_workspace(f"unit-thread-{i}")


def test_workspace_names_merges_registered_and_chain(
    monkeypatch: pytest.MonkeyPatch, register_workspace: Register
) -> None:
    from sts_bridge.credentials.sources import set_configuration_chain_lister, workspace_names

    monkeypatch.setenv("TERRAPI_URL", "http://127.0.0.1:1/core")
    register_workspace(FakeSource("registered-ws"))
    previous = set_configuration_chain_lister(lambda settings: ["b-ws", "a-ws"])
    try:
        assert workspace_names() == ["a-ws", "b-ws", "registered-ws"]
        set_configuration_chain_lister(None)
        assert workspace_names() == ["registered-ws"]
    finally:
        set_configuration_chain_lister(previous)


def test_workspace_names_without_a_chain_and_nothing_registered_says_so(
    register_workspace: Register,
) -> None:
    from sts_bridge.credentials.sources import set_configuration_chain_lister, workspace_names

    def no_platform(settings: object) -> list[str]:
        raise ConfigurationError("no platform", hint="set TERRAPI_URL")

    previous = set_configuration_chain_lister(no_platform)
    try:
        with pytest.raises(ConfigurationError):
            workspace_names()
        register_workspace(FakeSource("only-ws"))
        assert workspace_names() == ["only-ws"]
    finally:
        set_configuration_chain_lister(previous)
