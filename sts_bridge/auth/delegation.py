"""Processes started by ``sts-bridge credentials --serve`` never use the user's login.

The server marks its child's environment with :data:`DELEGATED_ENV`. In
such a process sts-bridge refuses every route to the user's identity (the
token cache, ``TERRAPI_TOKEN_COMMAND``, a client secret in a profile file,
an interactive login): the child was given workspace credentials, and a
library call or an ``sts-bridge token`` in it must not quietly widen that.
Commands that only need the workspace use the served credentials instead
(:mod:`sts_bridge.interop.delegated`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sts_bridge.errors import LoginRequiredError

__all__ = ["DELEGATED_ENV", "in_delegated_process", "refuse_login_in_delegated_process"]

DELEGATED_ENV = "STS_BRIDGE_DELEGATED"


def in_delegated_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs under ``sts-bridge credentials --serve``."""
    env = os.environ if environ is None else environ
    return bool(env.get(DELEGATED_ENV))


def refuse_login_in_delegated_process() -> None:
    """Raise :class:`~sts_bridge.errors.LoginRequiredError` in a delegated process."""
    if in_delegated_process():
        raise LoginRequiredError(
            "this process runs under `sts-bridge credentials --serve`: it has the served "
            "workspace credentials, never your login",
            hint="ask for tokens outside the served command, or use the workspace "
            "commands (ls, upload, download), which use the served credentials",
        )
