"""``sts-bridge devstack ...``: the local platform (IdP, reference TerrAPI
server, radosgw), run as ``python -m sts_bridge_devstack ...`` in place of
this process. The SDK never imports ``sts_bridge_devstack``: it is a separate
package (the ``devstack`` extra plus the Ceph binaries), and its own parser is
the one place where its options are defined."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

from sts_bridge.errors import ConfigurationError

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext

__all__ = ["devstack_argv", "register"]


def register(subparsers: Any) -> None:
    devstack = subparsers.add_parser(
        "devstack",
        help="run the local platform (identity provider, TerrAPI, S3 with STS)",
        description=(
            "The local platform for trying sts-bridge without a real TerrAPI: "
            "`sts-bridge devstack up` (foreground, Ctrl-C stops it), "
            '`eval "$(sts-bridge devstack up --detach)"` (background), '
            "`sts-bridge devstack down`. `sts-bridge devstack up --help` lists the options."
        ),
        add_help=False,
    )
    devstack.add_argument("devstack_args", nargs=argparse.REMAINDER)
    devstack.set_defaults(handler=_run)


def devstack_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m sts_bridge_devstack ...`` command line for ``args``."""
    return [sys.executable, "-m", "sts_bridge_devstack", *args.devstack_args]


def _run(args: argparse.Namespace, ctx: CommandContext) -> int:
    # find_spec on a top-level name locates the package without importing it
    if importlib.util.find_spec("sts_bridge_devstack") is None:
        raise ConfigurationError(
            "the local platform (package sts_bridge_devstack) is not installed",
            hint="install sts-bridge[devstack] from a source checkout and run `make setup`",
        )
    argv = devstack_argv(args)
    ctx.out.flush()
    ctx.err.flush()
    os.execv(argv[0], argv)  # noqa: S606 (no shell: a fixed argv)
    return 1  # not reached
