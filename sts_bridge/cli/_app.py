"""Argument parsing and the one error boundary of the CLI (httpie-style)."""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sts_bridge._version import VERSION
from sts_bridge.cli._context import CommandContext
from sts_bridge.errors import (
    ApiError,
    AuthError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidKeyError,
    NotAuthenticatedError,
    NotFoundError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageAccessDeniedError,
    StorageError,
    StsBridgeError,
)
from sts_bridge.interrupts import watching as watching_interrupts


class ExitStatus(enum.IntEnum):
    """Exit codes of ``sts-bridge`` (documented in the README)."""

    SUCCESS = 0
    ERROR = 1  # anything not listed below
    USAGE = 2  # bad arguments (argparse's own code)
    CONFIG = 3  # not configured / bad configuration
    AUTH = 4  # login needed or refused
    FORBIDDEN = 5  # 403 from the API or the store
    NOT_FOUND = 6  # no such workspace or object
    API = 7  # API unavailable or failed
    STORAGE = 8  # the object store refused or failed (5xx, SlowDown, stalled, ...)
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM (cleaned up like Ctrl-C)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C:
    multipart uploads of streams are aborted, file uploads keep their resume
    state, downloads remove their temp file."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while a command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: The module that registers each command (its ``register(subparsers)``).
#: A command line that names a command imports and builds only that
#: module's parsers: building all of them costs a warm command about 25 ms.
COMMAND_MODULES = {
    "login": "sts_bridge.cli.auth_commands",
    "logout": "sts_bridge.cli.auth_commands",
    "whoami": "sts_bridge.cli.auth_commands",
    "token": "sts_bridge.cli.auth_commands",
    "workspaces": "sts_bridge.cli.workspace_commands",
    "workspace": "sts_bridge.cli.workspace_commands",
    "credentials": "sts_bridge.cli.credentials_commands",
    "presign": "sts_bridge.cli.transfer_commands",
    "upload": "sts_bridge.cli.transfer_commands",
    "download": "sts_bridge.cli.transfer_commands",
    "ls": "sts_bridge.cli.transfer_commands",
    "rm": "sts_bridge.cli.transfer_commands",
    "uploads": "sts_bridge.cli.transfer_commands",
    "sync": "sts_bridge.cli.sync_commands",
    "run": "sts_bridge.cli.run_command",
    "devstack": "sts_bridge.cli.devstack_commands",
}

#: A command: its parsed arguments and what it runs with -> its exit status.
Handler = Callable[[argparse.Namespace, CommandContext], "int | ExitStatus | None"]

#: Global options that take a value (the word after them is not the command).
_GLOBAL_OPTIONS_WITH_VALUE = ("--profile",)


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not a global option."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


class UsageError(Exception):
    """Arguments that do not parse: the message and the ``--help`` to read (exit 2)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, with the terminal width found without ``shutil``.

    argparse makes a formatter for every argument it adds; the stock one
    imports ``shutil`` (and its compression modules) to ask the width, about
    5 ms of every command's start-up. The width is found the same way:
    ``COLUMNS``, else the terminal of stdout, else 80.
    """

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            kwargs["width"] = _terminal_columns() - 2
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing and exiting.

    :func:`main` prints it as one ``error:`` line and one ``hint:`` line and
    returns 2; ``sts-bridge run`` names the line. Sub-command parsers are made
    from the same class, so the hint names the sub-command's own ``--help``;
    their help has the same layout.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


@functools.cache
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: with a known ``command``, only the parsers of its module.

    Cached: parsing leaves a parser as it was, and ``sts-bridge run`` parses
    every line of a command with the same one."""
    parser = _Parser(
        prog="sts-bridge",
        description=(
            "Put data into your TerrAPI storage workspace and share it. "
            "Configuration comes from TERRAPI_* environment variables or a "
            "profile (see the README)."
        ),
    )
    parser.add_argument("--profile", help="configuration profile to use (TERRAPI_PROFILE)")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logs (never secrets)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or notes on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:  # help, a typo or no command: every command, for argparse's list
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


@functools.cache
def command_parser(command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` (a key of :data:`COMMAND_MODULES`).

    ``sts-bridge run`` parses each of its lines with it directly: going
    through the top-level parser for a thousand lines costs a third more.
    """
    parser = build_parser(command)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[command]  # type: ignore[no-any-return]


def exit_status_for(exc: StsBridgeError) -> ExitStatus:
    """The exit code of the CLI for ``exc`` (the README's table)."""
    if isinstance(exc, ConfigurationError):
        return ExitStatus.CONFIG
    if isinstance(exc, (AuthError, NotAuthenticatedError)):
        return ExitStatus.AUTH
    if isinstance(exc, (PermissionDeniedError, StorageAccessDeniedError)):
        return ExitStatus.FORBIDDEN
    if isinstance(exc, (NotFoundError, ObjectNotFoundError)):
        return ExitStatus.NOT_FOUND
    if isinstance(exc, (InvalidKeyError, InvalidArgumentError)):
        return ExitStatus.USAGE
    if isinstance(exc, ApiError):
        return ExitStatus.API
    if isinstance(exc, StorageError):
        return ExitStatus.STORAGE
    return ExitStatus.ERROR


#: The hint of an error that brings none of its own: every error gets a next step.
FALLBACK_HINTS = {
    ExitStatus.ERROR: "run again with --debug for details",
    ExitStatus.USAGE: "see `sts-bridge --help`",
    ExitStatus.CONFIG: "check the configuration (see the README, section Configuration)",
    ExitStatus.AUTH: "run `sts-bridge login`",
    ExitStatus.FORBIDDEN: "check that the workspace is yours, or ask its owner for access",
    ExitStatus.NOT_FOUND: "check the name: `sts-bridge workspaces` and `sts-bridge ls` list them",
    ExitStatus.API: "check TERRAPI_URL and try again later",
    ExitStatus.STORAGE: "check the storage endpoint and the network, then try again",
}


def error(message: str, hint: str | None = None) -> None:
    """Print one ``sts-bridge: error: ...`` line (and a hint) on stderr.

    Line breaks and control characters in either (from a server's answer,
    an object key, a user's argument) are escaped: one line each, always.
    """
    CommandContext(out=sys.stdout, err=sys.stderr, open_workspace=_no_workspace).error(
        message, hint
    )


def _no_workspace(name: str | None) -> NoReturn:
    raise AssertionError("no workspace here")


def parse_command(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed (raises :class:`UsageError`); ``args.handler`` runs it.

    Everything after the first ``--`` belongs to a child command
    (`sts-bridge credentials W --serve -- python job.py`), not to us.
    """
    argv = list(argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = build_parser(command_in(argv))
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    if passthrough and not getattr(args, "accepts_passthrough", False):
        parser.error("arguments after '--' are only for `credentials --serve -- CMD ...`")
    return args


def main(argv: Sequence[str] | None = None) -> ExitStatus:
    """Run the CLI: parse, run one command, print its error; never ``sys.exit``
    (except argparse's own ``--help`` and ``--version``)."""
    try:
        args = parse_command(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        error(exc.message, exc.hint)
        return ExitStatus.USAGE
    if args.profile:
        os.environ["TERRAPI_PROFILE"] = args.profile
    if getattr(args, "handler", None) is None:
        error("no command given", "run `sts-bridge --help` for the list of commands")
        return ExitStatus.USAGE
    ctx = CommandContext.of_process(quiet=args.quiet)
    with _cli_logging(debug=args.debug):
        outcome = execute(args, ctx)
    if outcome.message is not None:
        ctx.error(outcome.message, outcome.hint)
    return outcome.status


@dataclass(frozen=True)
class Outcome:
    """How one command ended: its exit status, and for a failure one message and a hint."""

    status: ExitStatus
    message: str | None = None
    hint: str | None = None


def execute(
    args: argparse.Namespace, ctx: CommandContext, handler: Handler | None = None
) -> Outcome:
    """Run one parsed command: the only place where exceptions become exit codes.

    ``handler`` runs in place of ``args.handler`` (``sts-bridge run``: several
    lines in one call). With ``--debug`` the traceback is printed on
    ``ctx.err`` first (redacted); the outcome is the same.
    """
    if handler is None:
        handler = args.handler
    try:
        with _sigterm_as_interrupt(), watching_interrupts():
            result = handler(args, ctx)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        ctx.err.write("\n")
        return Outcome(
            ExitStatus.TERMINATED if terminated else ExitStatus.INTERRUPTED,
            "terminated" if terminated else "interrupted",
            "run the same command again: an interrupted file upload resumes",
        )
    except StsBridgeError as exc:
        if args.debug:
            _print_traceback(ctx.err)
        status = exit_status_for(exc)
        return Outcome(status, exc.message, exc.hint or FALLBACK_HINTS[status])
    except BrokenPipeError:
        # e.g. `sts-bridge presign ... | head -1`: not an error for the user.
        _silence_stdout()
        return Outcome(ExitStatus.SUCCESS)
    except OSError as exc:
        # A local file problem (a missing folder, no space left, a
        # permission): the system's own words name it well enough.
        if args.debug:
            _print_traceback(ctx.err)
        where = f": {exc.filename}" if exc.filename else ""
        return Outcome(
            ExitStatus.ERROR,
            f"{exc.strerror or type(exc).__name__}{where}",
            "check the path, its permissions and the free space",
        )
    except Exception as exc:
        if args.debug:
            _print_traceback(ctx.err)
        return Outcome(
            ExitStatus.ERROR,
            f"unexpected {type(exc).__name__}: {_safe_text(exc)}",
            "run again with --debug for a traceback, and report it",
        )
    return Outcome(ExitStatus(int(result or 0)))


#: Libraries whose DEBUG records are noise for a user and carry signed headers
#: (botocore: ``X-Amz-Security-Token``, ``Credential=<access key id>``) or
#: full URLs (urllib3: the login callback with its authorization code).
QUIET_LIBRARIES = ("urllib3", "botocore", "boto3", "s3transfer", "authlib")


#: Library loggers whose warnings repeat a failure the CLI reports itself:
#: botocore.credentials warns, with a traceback, when our credential refresh
#: raises, and the error line already says why (shown with ``--debug``).
SAID_BY_US = ("botocore.credentials",)


class _OneLineFormatter(logging.Formatter):
    """Records without their traceback: one line each (``--debug`` shows tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
            )
        return super().format(record)


@contextlib.contextmanager
def _cli_logging(*, debug: bool) -> Iterator[None]:
    """Log to stderr through one handler that redacts every record, for one command.

    With ``--debug`` our own loggers speak at DEBUG; the libraries stay at
    INFO, and whatever they still say passes the same redaction. Levels and
    handlers are put back afterwards (``main`` also runs inside programs
    and tests).
    """
    from sts_bridge._redact import RedactingFilter

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("sts-bridge: %(levelname)s: %(name)s: %(message)s")
        if debug
        else _OneLineFormatter("sts-bridge: %(levelname)s: %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    saved = {name: logging.getLogger(name).level for name in ("", *QUIET_LIBRARIES, *SAID_BY_US)}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in QUIET_LIBRARIES:
        # their INFO records ("Resetting dropped connection") only with --debug:
        # a logger's own level lets records past the root's WARNING
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)
    if not debug:
        for name in SAID_BY_US:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _print_traceback(err: Any) -> None:
    """``--debug``: the traceback of the exception being handled, redacted, on stderr.

    The error line and the exit code that follow are the same as without
    ``--debug``: a script's ``$?`` does not depend on how much it logs."""
    import traceback

    from sts_bridge._redact import redact

    print(redact(traceback.format_exc()), end="", file=err)


def _safe_text(exc: BaseException) -> str:
    from sts_bridge._redact import redact

    return redact(str(exc))


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def glob_pattern(text: str) -> str:
    """argparse ``type`` of every ``--include`` / ``--exclude``: a pattern that cannot
    mean what it says (``'data[1-3'``) is a usage error (exit 2) before any request."""
    from sts_bridge.s3.upload import check_pattern

    try:
        return check_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_workspace_argument(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """The common ``--workspace/-w`` option (default: TERRAPI_WORKSPACE or the default)."""
    parser.add_argument(
        "-w",
        "--workspace",
        help="workspace name (default: TERRAPI_WORKSPACE, else your default workspace)",
        **kwargs,
    )
