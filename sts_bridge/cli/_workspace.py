"""Open the workspace a command names (``--workspace`` or the default)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sts_bridge.client import Client
    from sts_bridge.workspace import Workspace

__all__ = ["SharedWorkspaces", "open_workspace"]


def open_workspace(name: str | None) -> Workspace:
    """The ``Workspace`` ``name`` (``None``: TERRAPI_WORKSPACE or the default).

    No login prompt: a missing login is a ``LoginRequiredError`` telling the
    user to run ``sts-bridge login``. With a warm credentials cache this makes
    no network call at all. In a process started by ``credentials --serve``
    it is the served workspace, with the served credentials (never a login).
    """
    from sts_bridge.auth.delegation import in_delegated_process

    if in_delegated_process():
        from sts_bridge.config import load_settings
        from sts_bridge.interop.delegated import delegated_workspace

        return delegated_workspace(name, verify=load_settings().verify)
    from sts_bridge.client import Client

    return Client.from_env().workspace(name)


class SharedWorkspaces:
    """Workspaces opened once for many commands (``sts-bridge run``).

    One :class:`~sts_bridge.client.Client` for every command: one login, one
    STS exchange per workspace, however many lines name it; the transfers of
    a workspace share its connections (kept open until :meth:`close`).
    Thread-safe; a workspace that failed to open is tried again by the next
    command.
    """

    def __init__(self, at_once: int = 1) -> None:
        # lines in flight together: they may hold that many transfers' connections
        self._at_once = at_once
        # Held while a workspace opens: the lines that name it wait for the
        # one STS exchange instead of making their own.
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._opened: dict[str | None, Workspace] = {}

    def __call__(self, name: str | None) -> Workspace:
        from sts_bridge.auth.delegation import in_delegated_process

        with self._lock:
            ws = self._opened.get(name)
            if ws is None:
                if in_delegated_process():
                    ws = open_workspace(name)
                else:
                    if self._client is None:
                        from sts_bridge.client import Client

                        self._client = Client.from_env()
                    ws = self._client.workspace(name)
                ws.engine.reuse_connections(self._at_once)
                self._opened[name] = ws
            return ws

    def close(self) -> None:
        """Close the connections the workspaces kept."""
        with self._lock:
            opened = list(self._opened.values())
        for ws in opened:
            ws.engine.close()
