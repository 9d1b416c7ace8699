"""Open the workspace a command names (``--workspace`` or the default)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sts_bridge.workspace import Workspace


def open_workspace(args: argparse.Namespace) -> Workspace:
    """The ``Workspace`` for ``args.workspace`` (``None``: TERRAPI_WORKSPACE or the default).

    No login prompt: a missing login is a ``LoginRequiredError`` telling the
    user to run ``sts-bridge login``. With a warm credentials cache this makes
    no network call at all. In a process started by ``credentials --serve``
    it is the served workspace, with the served credentials (never a login).
    """
    from sts_bridge.auth.delegation import in_delegated_process

    if in_delegated_process():
        from sts_bridge.config import load_settings
        from sts_bridge.interop.delegated import delegated_workspace

        return delegated_workspace(getattr(args, "workspace", None), verify=load_settings().verify)
    from sts_bridge.client import Client

    return Client.from_env().workspace(getattr(args, "workspace", None))
