"""``sts-bridge workspaces`` and ``sts-bridge workspace [NAME]``.

Both print descriptions only (bucket, prefix, endpoint); credentials are
never printed here (``sts-bridge credentials`` is the command for that).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext

__all__ = ["register"]


def register(subparsers: Any) -> None:
    listing = subparsers.add_parser(
        "workspaces",
        help="list the workspaces you may use",
        description="List the storage workspaces of the current principal (one name a line).",
    )
    listing.add_argument("--json", action="store_true", help="print JSON on stdout")
    listing.set_defaults(handler=_workspaces)

    one = subparsers.add_parser(
        "workspace",
        help="show a workspace: bucket, prefix, endpoint (never credentials)",
        description=(
            "Show where a workspace lives. NAME defaults to TERRAPI_WORKSPACE, else "
            "your <platform>-<username>-private-workspace, else your only workspace."
        ),
    )
    one.add_argument("name", nargs="?", help="workspace name (default: your default workspace)")
    one.add_argument("--json", action="store_true", help="print JSON on stdout")
    one.set_defaults(handler=_workspace)


def _workspaces(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.client import Client

    client = Client.from_env()
    names = client.workspaces()
    if args.json:
        ctx.print(json.dumps(names, indent=2))
    else:
        for name in names:
            ctx.print(name)
    return 0


def _workspace(args: argparse.Namespace, ctx: CommandContext) -> int:
    ws = ctx.workspace(args.name)
    info = ws.describe()
    if args.json:
        ctx.print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        ctx.print(f"{key:<{width}}  {value if value is not None else '-'}")
    return 0
