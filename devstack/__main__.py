"""``python -m sts_bridge_devstack up``: the whole local platform in one command.

stdout carries ONLY the export block; everything else goes to stderr.

* ``up``: runs in the foreground until Ctrl-C or SIGTERM (paste the block
  into a second terminal, or ``--env-file env.sh`` and ``. env.sh``);
* ``up --detach``: starts the platform in the background, prints the block
  (plus ``STS_BRIDGE_DEVSTACK_PID``) once it is ready and exits, so that
  ``eval "$(python -m sts_bridge_devstack up --detach)"`` works;
* ``down``: stops a detached platform (``$STS_BRIDGE_DEVSTACK_PID``).

Stopping removes every process and temp folder of the platform.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130
DETACH_PREFIX = "sts-bridge-devstack-"


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
        block = "".join(
            f"export {name}={shlex.quote(value)}\n"
            for name, value in platform.env(user=args.user).items()
        )
        if args.env_file:
            _write_private(Path(args.env_file), block)
        sys.stdout.write(block)
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
        if args.env_file and Path(args.env_file).parent.name.startswith(DETACH_PREFIX):
            # the folder `up --detach` made for our log and env file
            shutil.rmtree(Path(args.env_file).parent, ignore_errors=True)
        _say("stopped; nothing left behind")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` 0600 and atomically (it holds a client secret)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def cmd_up_detached(args: argparse.Namespace, argv: list[str]) -> int:
    """Start ``up`` in a new session, wait until it is ready, print its block."""
    workdir = Path(tempfile.mkdtemp(prefix=DETACH_PREFIX))
    env_file = workdir / "env.sh"
    log_path = workdir / "devstack.log"
    child_argv = [a for a in argv if a != "--detach"] + ["--env-file", str(env_file)]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "sts_bridge_devstack", "up", *child_argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # survives this shell's Ctrl-C; `down` stops it
        )
    deadline = time.monotonic() + args.startup_timeout
    while not env_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(timeout=30)
            _say(f"the platform did not start; its log:\n{log_path.read_text(errors='replace')}")
            return 1
        time.sleep(0.1)
    block = env_file.read_text() + f"export STS_BRIDGE_DEVSTACK_PID={child.pid}\n"
    env_file.unlink()  # the block holds a client secret: keep no copy around
    if args.env_file:
        # the child was given our own --env-file after the user's (argparse
        # keeps the last), so the user's file is written here, with the pid
        _write_private(Path(args.env_file), block)
    sys.stdout.write(block)
    sys.stdout.flush()
    _say(f"running in the background (pid {child.pid}); log: {log_path}")
    _say("stop it with: sts-bridge devstack down   (or kill $STS_BRIDGE_DEVSTACK_PID)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    pid_text = args.pid or os.environ.get("STS_BRIDGE_DEVSTACK_PID")
    if not pid_text:
        _say("no platform to stop: give --pid or set STS_BRIDGE_DEVSTACK_PID")
        return 2
    pid = int(pid_text)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _say(f"no process {pid}: already stopped")
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _say(f"stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    _say(f"pid {pid} did not stop within 30 s; killing its process group")
    os.killpg(pid, signal.SIGKILL)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sts_bridge_devstack",
        description="The local platform of sts-bridge (IdP + reference TerrAPI + radosgw).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_up_arguments(sub.add_parser("up", help="start the platform, print its env, wait"))
    down = sub.add_parser("down", help="stop a platform started with `up --detach`")
    down.add_argument("--pid", help="its pid (default: $STS_BRIDGE_DEVSTACK_PID)")
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
        "--detach",
        action="store_true",
        help='start in the background, print the block and exit: eval "$(... up --detach)"',
    )
    up.add_argument(
        "--env-file", help="also write the export block to this file (mode 0600) when ready"
    )
    up.add_argument(
        "--startup-timeout", type=float, default=120.0, help="--detach: seconds to wait (120)"
    )
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "up" and args.detach:
        return cmd_up_detached(args, argv[argv.index("up") + 1 :])
    if args.command == "up":
        return cmd_up(args)
    if args.command == "down":
        return cmd_down(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
