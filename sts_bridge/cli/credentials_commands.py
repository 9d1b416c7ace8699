"""``sts-bridge credentials``: workspace credentials for other tools.

The AWS CLI runs ``credentials --format credential-process`` whenever its
keys have less than 15 minutes left: with a warm cache this command makes no
network call, and what only ``--serve`` needs is imported by ``--serve``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext

FORMATS = ("credential-process", "env", "json")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "credentials",
        help="print or serve workspace credentials for the AWS CLI, SDKs, s5cmd ...",
        description=(
            "Print the workspace's temporary S3 credentials in a format other tools "
            "read, or serve them (refreshing) to child processes over the AWS "
            "container-credentials protocol. Examples:\n"
            "  ~/.aws/config: credential_process = sts-bridge credentials W "
            "--format credential-process\n"
            '  eval "$(sts-bridge credentials W --format env)"\n'
            "  sts-bridge credentials W --serve -- python job.py"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workspace", nargs="?", help="workspace name (default: your default)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="credential-process",
        help="output format (default: credential-process)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="serve refreshing credentials on loopback (AWS container-credentials protocol)",
    )
    parser.add_argument(
        "--port", type=port_number, default=0, help="port for --serve (default: a free one)"
    )
    # with --serve, a command after "--" runs with the endpoint in its
    # environment (see cli._app.main for how "--" is split off)
    parser.set_defaults(handler=run_credentials, accepts_passthrough=True)


def port_number(text: str) -> int:
    """A TCP port number, 0 meaning "any free port" (argparse turns ValueError into usage)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def run_credentials(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.interop import tool_credentials as tc

    child = list(args.passthrough)
    if child and not args.serve:
        from sts_bridge.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "a command to run needs --serve", hint="sts-bridge credentials W --serve -- CMD ..."
        )
    if child and shutil.which(child[0]) is None:
        from sts_bridge.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"cannot run {child[0]!r}: not found, or not executable",
            hint="give the command to run after '--' (a program on PATH, or its path)",
        )
    workspace = ctx.workspace(args.workspace)
    if args.serve:
        return _serve(ctx, workspace, args.port, child)
    creds = handed_out(workspace)
    if args.format == "credential-process":
        ctx.print(json.dumps(tc.credential_process_payload(creds)))
    elif args.format == "json":
        ctx.print(json.dumps(tc.json_payload(workspace, creds), indent=2))
    else:
        import shlex

        for name, value in tc.env_assignments(workspace, creds).items():
            ctx.print(f"export {name}={shlex.quote(value)}")
    if args.format != "credential-process" and creds.expiry is not None:
        # a printed snapshot does not refresh itself: say how long it lasts
        left = creds.remaining()
        ctx.note(
            f"these credentials expire at "
            f"{creds.expiry.strftime('%Y-%m-%d %H:%M:%S')} UTC (in {left:.0f} s) and do not "
            "refresh; for a long job use `sts-bridge credentials --serve -- CMD`"
        )
    return 0


def handed_out(workspace: Any) -> Any:
    """Credentials with at least half their lifetime left, refreshed first when needed.

    A snapshot printed for another tool cannot refresh itself: handed out
    late in its life it dies soon after (60 s credentials handed out with 31 s
    left killed a notebook at 41 s). ``credentials_for`` keeps the current
    ones when they live long enough, else exchanges (or adopts a newer set
    another process cached).
    """
    creds = workspace.credentials()
    lifetime = creds.lifetime
    if lifetime is None or lifetime <= 0:
        return creds
    return workspace.credentials_for(lifetime / 2)


def _serve(ctx: CommandContext, workspace: Any, port: int, child: list[str]) -> int:
    import contextlib
    import shlex
    import signal
    import subprocess
    import threading

    from sts_bridge.interop.container_credentials import ContainerCredentialsServer

    with ContainerCredentialsServer(workspace, port=port) as server:
        if child:
            from sts_bridge.interop.child_env import served_child_environment

            served = server.env()
            ctx.err.write(f"sts-bridge: serving {workspace.name} credentials at {server.url}\n")
            # The child gets the endpoint and an AWS configuration of its own,
            # never the user's tokens or secrets (see interop.child_env).
            with served_child_environment(
                workspace,
                credentials_url=served["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
                auth_token=served["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
            ) as env:
                try:
                    return subprocess.call(child, env=env)
                except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
                    from sts_bridge.errors import InvalidArgumentError

                    raise InvalidArgumentError(
                        f"cannot run {child[0]!r}: {exc.strerror}",
                        hint="give the command to run after '--' (a program on PATH, or its path)",
                    ) from None
        for name, value in server.env().items():
            ctx.print(f"export {name}={shlex.quote(value)}")
        ctx.out.flush()
        ctx.err.write(
            f"sts-bridge: serving {workspace.name} credentials at {server.url}; Ctrl-C to stop\n"
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
