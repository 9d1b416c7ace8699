"""``python -m sts_bridge_devstack up``: the whole local platform in one command.

stdout carries ONLY the export block (``eval "$(python -m sts_bridge_devstack up)"``
does not work since the command keeps running, but
``python -m sts_bridge_devstack up > env.sh`` and ``source env.sh`` in
another shell does); everything else goes to stderr. Ctrl-C or SIGTERM stops
the platform and removes its temp folders.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from typing import Any

EXIT_INTERRUPTED = 130


def _say(text: str) -> None:
    print(f"sts-bridge-devstack: {text}", file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from .platform import LocalPlatform, PlatformError, resolve_s3_backend

    try:
        backend = resolve_s3_backend(args.s3)
    except PlatformError as exc:
        _say(str(exc))
        return 3

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_signal)

    platform = LocalPlatform(
        token_ttl=args.token_ttl,
        sts_duration=args.sts_duration,
        auto_approve=args.auto_approve,
        policy_file=args.policy,
        api_log=None if args.quiet else sys.stderr,
        s3_backend=backend,
    )
    # the moto fallback prints its warning (the guarantees it loses) on stderr
    _say(f"starting the identity provider, {backend} and the reference TerrAPI server ...")
    try:
        platform.start()
    except Exception as exc:
        _say(f"could not start: {exc}")
        platform.stop()
        return 1
    try:
        for name, value in platform.env(user=args.user).items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        _say(f"ready in {platform.start_seconds:.1f} s")
        _say(f"  API      {platform.api_url}")
        _say(f"  issuer   {platform.issuer}")
        _say(f"  S3       {platform.s3_endpoint} ({platform.s3_backend})")
        _say(f"  users    {', '.join(sorted(platform.users))} (password: <name>-password)")
        _say(f"  tokens   {platform.token_ttl} s, STS credentials {platform.sts_duration} s")
        _say("press Ctrl-C to stop")
        while not stop.is_set():
            if not platform.running:
                _say("the reference API stopped unexpectedly")
                return 1
            stop.wait(0.5)
        _say("stopping ...")
        return 0
    finally:
        platform.stop()
        _say("stopped; nothing left behind")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sts_bridge_devstack",
        description="The local platform of sts-bridge (IdP + reference TerrAPI + radosgw).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_up_arguments(sub.add_parser("up", help="start the platform, print its env, wait"))
    return parser


def add_up_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument(
        "--token-ttl", type=int, default=3600, help="access token lifetime, s (default 3600)"
    )
    up.add_argument(
        "--sts-duration",
        type=int,
        default=None,
        help="STS credentials lifetime, s (default: platform.yaml, 900)",
    )
    up.add_argument(
        "--auto-approve",
        action="store_true",
        help="log in a user named by login_hint and grant consent without pages",
    )
    up.add_argument("--policy", default=None, help="workspace policy YAML (default platform.yaml)")
    up.add_argument(
        "--user", default="alice", help="user named in STS_BRIDGE_DEVSTACK_USER (default alice)"
    )
    up.add_argument("--quiet", action="store_true", help="no per-request API log on stderr")
    up.add_argument(
        "--s3",
        choices=("auto", "radosgw", "moto"),
        default=None,
        help="S3 backend: radosgw, moto (fallback: no expiry, no presigned URLs, no "
        "session policies) or auto (radosgw when installed; default: "
        "$STS_BRIDGE_DEVSTACK_S3, else auto)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_up(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
