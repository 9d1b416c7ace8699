"""``sts-bridge devstack up``: start the local platform (IdP, reference TerrAPI
server, radosgw) by running ``python -m sts_bridge_devstack up`` in place of
this process. The SDK never imports ``sts_bridge_devstack``: it is a separate
package (the ``devstack`` extra plus the Ceph binaries)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

from sts_bridge.errors import ConfigurationError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    devstack = subparsers.add_parser(
        "devstack",
        help="run the local platform (identity provider, TerrAPI, S3 with STS)",
        description="The local platform for trying sts-bridge without a real TerrAPI.",
    )
    sub = devstack.add_subparsers(dest="devstack_command", metavar="COMMAND")
    up = sub.add_parser(
        "up",
        help="start the platform, print the TERRAPI_* export block on stdout, wait for Ctrl-C",
        description=(
            "Start the identity provider, radosgw and the reference TerrAPI server on "
            "loopback; print `export TERRAPI_...=...` lines on stdout (everything else "
            "on stderr) and run until Ctrl-C."
        ),
    )
    up.add_argument("--token-ttl", type=int, help="access token lifetime in seconds (3600)")
    up.add_argument("--sts-duration", type=int, help="STS credentials lifetime in seconds (900)")
    up.add_argument(
        "--auto-approve",
        action="store_true",
        help="log in the login_hint user and grant consent without pages",
    )
    up.add_argument("--policy", help="workspace policy YAML (default: the built-in platform.yaml)")
    up.add_argument("--user", help="user named in STS_BRIDGE_DEVSTACK_USER (alice)")
    up.add_argument("--quiet", action="store_true", help="no per-request API log on stderr")
    up.set_defaults(handler=_up)
    devstack.set_defaults(handler=lambda args: _help(devstack))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def devstack_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m sts_bridge_devstack up ...`` command line for ``args``."""
    argv = [sys.executable, "-m", "sts_bridge_devstack", "up"]
    if args.token_ttl is not None:
        argv += ["--token-ttl", str(args.token_ttl)]
    if args.sts_duration is not None:
        argv += ["--sts-duration", str(args.sts_duration)]
    if args.auto_approve:
        argv.append("--auto-approve")
    if args.policy:
        argv += ["--policy", args.policy]
    if args.user:
        argv += ["--user", args.user]
    if args.quiet:
        argv.append("--quiet")
    return argv


def _up(args: argparse.Namespace) -> int:
    # find_spec on a top-level name locates the package without importing it
    if importlib.util.find_spec("sts_bridge_devstack") is None:
        raise ConfigurationError(
            "the local platform (package sts_bridge_devstack) is not installed",
            hint="install sts-bridge[devstack] from a source checkout and run `make setup`",
        )
    argv = devstack_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 (no shell: a fixed argv)
    return 1  # not reached
