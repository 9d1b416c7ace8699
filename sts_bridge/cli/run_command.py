"""``sts-bridge run FILE|-``: many data commands in one process, some at a time.

Each line of FILE (``-``: stdin) is a data command in the CLI's own syntax,
without the leading ``sts-bridge`` (``upload a.tif --to results/``,
``presign results/a.tif``); words are split as a POSIX shell splits them,
``#`` starts a comment, blank lines are skipped. Every line is parsed and
checked before anything runs: one that does not is a usage error (exit 2)
naming its line number, and no request is made.

The lines then run ``--jobs`` at a time in this one process, through the
same command functions as ``sts-bridge COMMAND`` (each with its own output
buffers, see :mod:`sts_bridge.cli._context`) and one shared set of
workspaces: one login and one STS exchange per workspace for the whole file.
When a line ends, its output goes to stdout in one piece (``--json``: one
JSON object per line of FILE) and its error to stderr as one line. The exit
status is the highest of the lines' (0 when all succeeded).

Ctrl-C (or SIGTERM) starts no further line and cancels those in flight:
their multipart uploads are aborted and their downloads' temp files removed
(unlike a single ``sts-bridge upload``, which keeps an interrupted upload
to resume: a batch is run again as a whole). Exit 130 (143).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import io
import json
import shlex
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sts_bridge.cli._app import (
    ExitStatus,
    Outcome,
    Terminated,
    UsageError,
    command_parser,
    execute,
)
from sts_bridge.cli._context import CommandContext
from sts_bridge.cli._plain_lines import PlainLineParser
from sts_bridge.cli._text import printable
from sts_bridge.errors import InvalidArgumentError, StsBridgeError

if TYPE_CHECKING:
    from sts_bridge.cli._context import WorkspaceOpener

__all__ = ["BATCH_COMMANDS", "DEFAULT_JOBS", "BatchLine", "parse_lines", "register", "run_lines"]

#: The commands a line may hold (the data commands; each registers a ``check``).
BATCH_COMMANDS = ("presign", "upload", "download", "ls", "rm", "sync")
#: Lines in flight at once. Each transfer moves its own parts and ranges in
#: parallel too: this bounds how many transfers, not how many connections.
DEFAULT_JOBS = 16
_HELP_WORDS = frozenset({"-h", "--help", "--version"})


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run many data commands from a file (or stdin) in one process",
        description=(
            "Run data commands (" + ", ".join(BATCH_COMMANDS) + "), one per line in "
            "sts-bridge's own syntax without the leading 'sts-bridge', JOBS at a time in "
            "this one process: one login and one STS exchange for all of them. '#' starts "
            "a comment. Every line is checked before anything runs. A result per line on "
            "stdout, an error line per failure on stderr; the exit status is the highest "
            "of the lines'. Ctrl-C cancels the lines in flight and aborts their uploads."
        ),
    )
    p.add_argument("file", metavar="FILE", help="file of commands, one per line; - = stdin")
    p.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"commands in flight at once (default {DEFAULT_JOBS})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line of FILE: line, command, status, exit_code, result or error",
    )
    p.set_defaults(handler=run_batch)


def _jobs(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


@dataclass(frozen=True)
class BatchLine:
    """One command of the file: its line number, its text and its parsed arguments."""

    number: int
    text: str
    args: argparse.Namespace


class BadLines(InvalidArgumentError):
    """Lines that do not parse or check (exit 2): ``(line number, message)`` each."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__(  # the last one; the CLI prints the others first
            f"line {problems[-1][0]}: {problems[-1][1]}",
            hint="nothing was run; fix the line(s) above (`sts-bridge COMMAND --help`)",
        )


def parse_lines(lines: Iterable[str], *, json_results: bool = False) -> list[BatchLine]:
    """The commands of ``lines``, every one parsed and checked; :class:`BadLines` otherwise.

    ``json_results`` turns on each command's own ``--json`` where it has one,
    so that ``run --json`` reports structured results.
    """
    commands: list[BatchLine] = []
    problems: list[tuple[int, str]] = []
    probe = _line_context(io.StringIO(), io.StringIO(), _not_opened, None)
    for number, raw in enumerate(lines, start=1):
        try:
            argv = split_line(raw)
        except ValueError as exc:  # an unclosed quote
            problems.append((number, str(exc)))
            continue
        if not argv:
            continue
        try:
            args = _parse_one(argv)
            if json_results and hasattr(args, "json"):
                args.json = True
            args.check(args, probe)
        except UsageError as exc:
            problems.append((number, exc.message))
            continue
        except StsBridgeError as exc:
            problems.append((number, exc.message))
            continue
        commands.append(BatchLine(number, raw.strip(), args))
    if problems:
        raise BadLines(problems)
    return commands


_SPECIAL = frozenset("'\"\\#")


def split_line(line: str) -> list[str]:
    """The words of ``line`` as a POSIX shell splits them; ``#`` at the start of a
    word starts a comment (``a#b`` is one word, as in sh: object keys hold ``#``).

    Raises ``ValueError`` for an unclosed quote.
    """
    if _SPECIAL.isdisjoint(line):
        return line.split()  # most lines: no quoting, no comment
    return shlex.split(line[: _comment_start(line)])


def _comment_start(line: str) -> int:
    """Where the comment of ``line`` starts (its length when it has none)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                escaped = True
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return len(line)


def _parse_one(argv: list[str]) -> argparse.Namespace:
    if argv[0] not in BATCH_COMMANDS:
        raise UsageError(
            f"{argv[0]!r} is not a command `sts-bridge run` runs "
            f"(it runs {', '.join(BATCH_COMMANDS)})",
            "see `sts-bridge run --help`",
        )
    if "--" in argv or _HELP_WORDS.intersection(argv):
        raise UsageError(f"{argv[0]}: '--', --help and --version are not for a line", "")
    args = plain_line_parser(argv[0]).parse(argv[1:])
    if args is None:  # not a plain line: argparse parses it, or says what is wrong
        args = command_parser(argv[0]).parse_args(argv[1:])
    # the top-level options a line cannot set
    args.command, args.profile, args.debug, args.quiet, args.passthrough = (
        argv[0],
        None,
        False,
        False,
        [],
    )
    return args


@functools.cache
def plain_line_parser(command: str) -> PlainLineParser:
    """The parser of ``command``'s plain lines (one per command, as its argparse parser)."""
    return PlainLineParser(command_parser(command))


def _not_opened(name: str | None) -> Any:
    raise AssertionError("a check opened a workspace")


def _line_context(
    out: io.StringIO,
    err: io.StringIO,
    opener: WorkspaceOpener,
    cancel: threading.Event | None,
    quiet: bool = False,
) -> CommandContext:
    """What one line runs with: its own buffers, no stdin/stdout, no questions."""
    return CommandContext(
        out=out, err=err, open_workspace=opener, quiet=quiet, interactive=False, cancel=cancel
    )


# --------------------------------------------------------------- running
@dataclass(frozen=True)
class LineResult:
    """How one line ended, with what it wrote."""

    line: BatchLine
    outcome: Outcome
    out: str
    talk: str
    cancelled: bool


def run_lines(
    commands: list[BatchLine],
    jobs: int,
    opener: WorkspaceOpener,
    cancel: threading.Event,
    report: Any,
    *,
    quiet: bool = False,
    interrupted: Any = None,
) -> list[LineResult]:
    """Run ``commands`` ``jobs`` at a time; ``report(result)`` as each ends (one at a time).

    Returns the results of the lines that ran. A ``KeyboardInterrupt`` in the
    calling thread sets ``cancel``, starts nothing more, calls
    ``interrupted(lines in flight, lines not started)``, waits for the lines in
    flight to unwind (they abort their uploads) and is raised again.
    """
    results: list[LineResult] = []
    report_lock = threading.Lock()

    def one(line: BatchLine) -> None:
        if cancel.is_set():
            return
        out, err = io.StringIO(), io.StringIO()
        outcome = execute(line.args, _line_context(out, err, opener, cancel, quiet))
        result = LineResult(line, outcome, out.getvalue(), err.getvalue(), cancel.is_set())
        with report_lock:
            results.append(result)
            report(result)

    def together(task: list[BatchLine]) -> None:
        if len(task) == 1:
            one(task[0])
            return
        if cancel.is_set():
            return
        err = io.StringIO()
        texts: list[str] = []

        def sign_all(args: argparse.Namespace, ctx: CommandContext) -> int:
            from sts_bridge.cli.transfer_commands import presign_texts

            texts.extend(presign_texts([line.args for line in task], ctx))
            return 0

        context = _line_context(io.StringIO(), err, opener, cancel, quiet)
        outcome = execute(task[0].args, context, sign_all)
        if outcome.status != ExitStatus.SUCCESS:
            # each line on its own, so that each line's outcome is its own
            for line in task:
                one(line)
            return
        talk, cancelled = err.getvalue(), cancel.is_set()
        with report_lock:
            for line, text in zip(task, texts, strict=True):
                result = LineResult(line, outcome, text, talk, cancelled)
                results.append(result)
                report(result)

    pool = cf.ThreadPoolExecutor(
        jobs, thread_name_prefix="sts-bridge-run", initializer=_signals_to_the_main_thread
    )
    futures = [pool.submit(together, task) for task in _tasks(commands)]
    try:
        # One future after the other (each wait watches one future: waiting on
        # all that are pending, again after each one ends, is quadratic), with
        # a timeout, so that the main thread gets back to Python now and then:
        # a signal taken by another thread is handled only there.
        for fut in futures:
            while not cf.wait([fut], timeout=1.0).done:
                pass
            fut.result()
    except BaseException:
        cancel.set()
        not_started = sum(fut.cancel() for fut in futures)
        if interrupted is not None:
            interrupted(sum(not fut.done() for fut in futures), not_started)
        _wait_out(futures)
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    return results


#: Consecutive presign lines of one workspace, method, lifetime and output form
#: are signed together, this many at most: one call signs a hundred keys for
#: about a quarter of what a hundred one-key lines cost (each line: its
#: command's setup, a credentials check, a task of the pool). Each line keeps
#: its own result; a group that fails runs again line by line.
PRESIGNS_TOGETHER = 100


def _tasks(commands: list[BatchLine]) -> list[list[BatchLine]]:
    """``commands`` as the pool's tasks: a group of presign lines, or one line."""
    tasks: list[list[BatchLine]] = []
    last: tuple[Any, ...] | None = None
    for line in commands:
        args = line.args
        shared = (
            (args.workspace, args.method, args.expires_in, args.json)
            if getattr(args, "command", None) == "presign"
            else None
        )
        if shared is not None and shared == last and len(tasks[-1]) < PRESIGNS_TOGETHER:
            tasks[-1].append(line)
        else:
            tasks.append([line])
        last = shared
    return tasks


def _signals_to_the_main_thread() -> None:
    """Block Ctrl-C and SIGTERM in a worker thread (and the transfer threads it starts).

    The kernel hands a process's signal to any thread that does not block it;
    Python runs the handler in the main thread only, and only once that thread
    runs again. Blocked everywhere else, the signal wakes the main thread at once.
    """
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _wait_out(futures: list[cf.Future[None]]) -> None:
    """Wait for the lines in flight; a second Ctrl-C does not cut their cleanup short."""
    while True:
        try:
            cf.wait(futures)
            return
        except KeyboardInterrupt:
            continue


# --------------------------------------------------------------- the command
def run_batch(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.cli._workspace import SharedWorkspaces

    text = _read_source(args.file, ctx)
    try:
        commands = parse_lines(text.splitlines(), json_results=args.json)
    except BadLines as exc:
        for number, message in exc.problems[:-1]:
            ctx.error(f"line {number}: {message}")
        raise
    cancel = threading.Event()
    printer = _Printer(ctx, args.json)
    workspaces = SharedWorkspaces(at_once=args.jobs)
    try:
        results = run_lines(
            commands,
            args.jobs,
            workspaces,
            cancel,
            printer,
            quiet=ctx.quiet,
            interrupted=functools.partial(_say_stopping, ctx),
        )
    except KeyboardInterrupt as exc:
        status = ExitStatus.TERMINATED if isinstance(exc, Terminated) else ExitStatus.INTERRUPTED
        done = len(printer.seen)
        ctx.error(
            f"{'terminated' if status == ExitStatus.TERMINATED else 'interrupted'}: "
            f"{done} of {len(commands)} line(s) ended, the others did not run; "
            "uploads in flight were aborted",
            "run the file again (or only the lines that did not succeed)",
        )
        return max([status, *printer.statuses])
    finally:
        workspaces.close()
    return max([ExitStatus.SUCCESS, *(r.outcome.status for r in results)])


def _say_stopping(ctx: CommandContext, in_flight: int, not_started: int) -> None:
    # Said at once: cleaning up can take a moment (uploads are aborted).
    ctx.err.write(
        f"\nsts-bridge: interrupted: stopping {in_flight} line(s) in flight "
        f"(their uploads are aborted), {not_started} not started\n"
    )
    ctx.err.flush()


def _read_source(name: str, ctx: CommandContext) -> str:
    if name == "-":
        if ctx.stdin is None:
            raise InvalidArgumentError("no stdin to read commands from")
        data = ctx.stdin.read()
    else:
        with open(name, "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{'stdin' if name == '-' else name} is not UTF-8 text (byte {exc.start})",
            hint="give a text file of commands, one per line",
        ) from None


class _Printer:
    """Writes each line's result as it ends: stdout in one piece, errors as one line."""

    def __init__(self, ctx: CommandContext, as_json: bool) -> None:
        self.ctx = ctx
        self.as_json = as_json
        self.seen: list[int] = []
        self.statuses: list[ExitStatus] = []

    def __call__(self, r: LineResult) -> None:
        ctx, outcome = self.ctx, r.outcome
        self.seen.append(r.line.number)
        failed = outcome.status != ExitStatus.SUCCESS
        message: str | None
        hint: str | None
        if failed and r.cancelled:
            status: ExitStatus = ExitStatus.INTERRUPTED
            message, hint = "interrupted", None
        else:
            status, message, hint = outcome.status, outcome.message, outcome.hint
        self.statuses.append(status)
        if r.talk:
            ctx.err.write(r.talk)
        if self.as_json:
            doc: dict[str, Any] = {
                "line": r.line.number,
                "command": r.line.text,
                "status": "ok" if not failed else ("interrupted" if r.cancelled else "failed"),
                "exit_code": int(status),
            }
            if failed:
                doc["error"] = message
                if hint:
                    doc["hint"] = hint
            else:
                doc["result"] = _result_of(r.line.args, r.out)
            ctx.out.write(json.dumps(doc) + "\n")
        else:
            ctx.out.write(r.out)
        ctx.out.flush()
        if failed:
            said = f"line {r.line.number}: {printable(r.line.text, backslash=False)}: {message}"
            if hint:
                said += f" (hint: {hint})"
            ctx.error(said)
            ctx.err.flush()


def _result_of(args: argparse.Namespace, out: str) -> Any:
    """A line's result for ``--json``: its command's JSON document (``ls``: its JSON
    lines, as a list), else the lines it printed."""
    if getattr(args, "json", False):
        if args.command == "ls":
            return [json.loads(line) for line in out.splitlines() if line]
        return json.loads(out)
    return out.splitlines()
