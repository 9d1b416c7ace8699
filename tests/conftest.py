"""Fixtures every test folder shares.

Workspace sources registered with
``sts_bridge.credentials.sources.register_workspace_source`` live in one
registry per process, which ``workspace://`` URLs, unpickled workspaces and
Dask workers read. A registration left behind by one test would answer for
the next test that uses the same name, so results would depend on test
order: tests register through ``register_workspace``, and every test checks
that it leaves the registry as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sts_bridge.credentials.sources import WorkspaceSource

Register = Callable[["WorkspaceSource"], Callable[[], None]]


@pytest.fixture
def register_workspace() -> Iterator[Register]:
    """``register_workspace(source) -> unregister``: ``register_workspace_source``
    for this test; what the test has not unregistered goes when it ends."""
    from sts_bridge.credentials.sources import register_workspace_source

    undos: list[Callable[[], None]] = []

    def register(source: WorkspaceSource) -> Callable[[], None]:
        undo = register_workspace_source(source)
        undos.append(undo)
        return undo

    try:
        yield register
    finally:
        for undo in reversed(undos):
            undo()  # unregistering twice is harmless


@pytest.fixture(autouse=True)
def _workspace_registry_left_as_found() -> Iterator[None]:
    """Fails a test that leaves the workspace registry changed (and restores it)."""
    from sts_bridge.credentials import sources

    with sources._lock:
        before = {name: list(stack) for name, stack in sources._registered.items()}
    yield
    with sources._lock:
        after = {name: list(stack) for name, stack in sources._registered.items()}
        changed = sorted(
            name
            for name in set(before) | set(after)
            if [id(s) for s in before.get(name, [])] != [id(s) for s in after.get(name, [])]
        )
        if changed:
            sources._registered.clear()
            sources._registered.update(before)
    if changed:
        pytest.fail(
            f"workspace sources left registered for {changed}: register them with "
            "the register_workspace fixture so later tests do not see them"
        )
