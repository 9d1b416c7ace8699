"""``sts-bridge sync SRC DST``: make a workspace folder match a local one, or back.

One side is a local folder, the other ``workspace://<workspace>/<folder>/``.
stdout carries the plan (``--dry-run``) or the summary (``--json`` for
scripts); stderr carries talk: a progress line on a terminal, else one
summary line every ``--log-interval`` seconds (CI logs). Only the
lightweight transfer engine is imported: no boto3.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from sts_bridge.cli._app import ExitStatus, glob_pattern
from sts_bridge.cli._text import printable

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext
    from sts_bridge.s3.sync import SyncPlan, SyncReport, SyncStatus

__all__ = ["register"]

_SCHEME = "workspace://"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sync",
        help="make a folder match another, local <-> workspace, by content",
        description=(
            "Make DST match SRC. One side is a local folder, the other "
            "workspace://<workspace>/<folder>/. Files are compared by content (MD5 "
            "ETag or the recorded SHA-256), never by size and time alone. Filters: a "
            "glob without '/' also matches the file name; --exclude wins over "
            "--include; without --include everything is included; the filters apply "
            "to both sides (also to --delete)."
        ),
    )
    p.add_argument("src", metavar="SRC", help="local folder or workspace://WS/FOLDER/")
    p.add_argument("dst", metavar="DST", help="local folder or workspace://WS/FOLDER/")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--delete", action="store_true", help="delete what is gone from SRC")
    p.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    p.add_argument(
        "--include", action="append", metavar="GLOB", type=glob_pattern, help="only matching paths"
    )
    p.add_argument(
        "--exclude", action="append", metavar="GLOB", type=glob_pattern, help="skip matching paths"
    )
    p.add_argument(
        "--allow-empty-source",
        action="store_true",
        help="sync from a source that holds no file (a missing workspace folder counts as "
        "empty); without it an empty source is an error, so a typo never empties DST",
    )
    p.add_argument("--json", action="store_true", help="the plan or the report as JSON")
    p.add_argument(
        "--no-hash-cache",
        action="store_true",
        help="hash every local file again (do not use the cached hashes)",
    )
    p.add_argument(
        "--log-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="off a terminal, print a progress line this often (default 10)",
    )
    p.set_defaults(handler=run_sync_command, check=check_sync)


def _split(url: str) -> tuple[str, str]:
    from sts_bridge.urls import parse_workspace_url

    parsed = parse_workspace_url(url)
    key = parsed.key
    if key and not key.endswith("/"):
        key += "/"
    return parsed.workspace, key


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _ProgressLine:
    """A progress line on a terminal, else a summary line every ``interval`` seconds."""

    def __init__(self, err: IO[str], tty: bool, interval: float) -> None:
        self.err = err
        self.tty = tty
        self.interval = interval
        self.start = time.monotonic()
        self.last = self.start
        self.lock = threading.Lock()
        self.shown = False

    def text(self, s: SyncStatus) -> str:
        rate = s.bytes_done / max(time.monotonic() - self.start, 1e-6)
        failed = f", {s.failed} failed" if s.failed else ""
        return (
            f"{s.actions_done}/{s.actions_total} done{failed}, "
            f"{_human(s.bytes_done)} / {_human(s.bytes_total)}, {_human(rate)}/s"
        )

    def __call__(self, s: SyncStatus) -> None:
        now = time.monotonic()
        finished = s.actions_done + s.failed == s.actions_total
        with self.lock:
            wait = 0.1 if self.tty else self.interval
            if now - self.last < wait and not (self.tty and finished):
                return
            self.last = now
            if self.tty:
                self.err.write(f"\r{self.text(s)}   ")
                self.shown = True
            else:
                self.err.write(f"sts-bridge: sync: {self.text(s)}\n")
            self.err.flush()

    def close(self) -> None:
        if self.shown:
            self.err.write("\n")


def _confirm_deletes(
    ctx: CommandContext, args: argparse.Namespace, plan: SyncPlan, where: str
) -> bool | None:
    """True to go on; False when the user said no; None when nobody could be asked."""
    count = len(plan.deletes)
    if not count or args.yes:
        return True
    if not ctx.can_ask:
        return None
    answer = input(f"delete {count} file(s) {where} that are gone from the source? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def check_sync_arguments(args: argparse.Namespace) -> tuple[str, str, str, str]:
    """``(direction, workspace, folder, local folder)`` of a sync, or
    :class:`~sts_bridge.errors.InvalidArgumentError` (exit 2) before any request."""
    from sts_bridge.errors import InvalidArgumentError

    src_remote = args.src.startswith(_SCHEME)
    dst_remote = args.dst.startswith(_SCHEME)
    if src_remote == dst_remote:
        raise InvalidArgumentError(
            "sync needs one local folder and one workspace folder",
            hint="write the workspace side as workspace://<workspace>/<folder>/",
        )
    if not math.isfinite(args.log_interval) or args.log_interval <= 0:
        raise InvalidArgumentError(
            f"--log-interval must be a number of seconds above 0, not {args.log_interval!r}",
            hint="e.g. --log-interval 30",
        )
    workspace, prefix = _split(args.src if src_remote else args.dst)
    local = args.dst if src_remote else args.src
    return ("download" if src_remote else "upload"), workspace, prefix, local


def check_sync(args: argparse.Namespace, ctx: CommandContext) -> None:
    """What ``sts-bridge run`` checks of a sync line before anything runs: its
    arguments, and ``--yes`` with ``--delete`` (nobody can be asked there)."""
    check_sync_arguments(args)
    if args.delete and not args.yes and not ctx.can_ask:
        from sts_bridge.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "sync --delete needs --yes here: there is no terminal to ask on",
            hint="add --yes to delete without asking",
        )


def run_sync_command(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.errors import InvalidArgumentError, StsBridgeError, TransferError
    from sts_bridge.s3.sync import plan_sync, run_sync

    direction, workspace, prefix, local = check_sync_arguments(args)
    ws = ctx.workspace(workspace)
    plan = plan_sync(
        ws,
        direction,
        local,
        prefix,
        include=args.include,
        exclude=args.exclude,
        delete=args.delete,
        use_hash_cache=not args.no_hash_cache,
        allow_empty_source=args.allow_empty_source,
    )
    where = f"in workspace {workspace!r}" if direction == "upload" else f"in {local}"
    if args.dry_run:
        _print_plan(ctx, args, plan)
        return 0
    confirmed = _confirm_deletes(ctx, args, plan, where)
    if confirmed is None:
        raise InvalidArgumentError(
            f"refusing to delete {len(plan.deletes)} file(s) {where} without confirmation "
            "(nothing was changed)",
            hint="add --yes to delete without asking, or --dry-run to see the plan",
        )
    if not confirmed:
        ctx.note("nothing changed")
        return ExitStatus.ERROR
    line = (
        None
        if ctx.quiet or not ctx.interactive
        else _ProgressLine(ctx.err, ctx.err.isatty(), args.log_interval)
    )
    try:
        report = run_sync(ws, plan, progress=ctx.watched_status(line))
    finally:
        if line is not None:
            line.close()
    _print_report(ctx, args, plan, report)
    if report.failed:
        key, message = report.failed[0]
        raise TransferError(
            f"{len(report.failed)} of {len(plan.actions)} action(s) failed, "
            f"e.g. {key!r}: {message}",
            hint="run the same sync again to retry what failed",
        )
    if plan.skipped:
        first = plan.skipped[0]
        raise StsBridgeError(  # exit 1
            f"{len(plan.skipped)} path(s) skipped, e.g. {first.path!r}: {first.reason}; "
            "everything else is in sync",
            hint="rename or remove them, or leave them out with --exclude",
        )
    return 0


def _print_plan(ctx: CommandContext, args: argparse.Namespace, plan: SyncPlan) -> None:
    if args.json:
        ctx.print(json.dumps(plan.as_json(), indent=2))
        return
    ctx.out.write("".join(printable(a.describe()) + "\n" for a in plan.actions))
    _print_skipped(ctx, plan)
    ctx.note(
        f"dry run: {len(plan.actions)} action(s), "
        f"{_human(plan.bytes)} to transfer, {plan.unchanged} unchanged; nothing changed"
    )


def _print_skipped(ctx: CommandContext, plan: SyncPlan) -> None:
    """One warning line per path left out (also with --quiet and --json: it changes the
    outcome, and the exit status says so too)."""
    for s in plan.skipped:
        ctx.err.write(f"sts-bridge: warning: skipped {s.path!r}: {s.reason}\n")


def _print_report(
    ctx: CommandContext, args: argparse.Namespace, plan: SyncPlan, report: SyncReport
) -> None:
    _print_skipped(ctx, plan)
    if report.removed_part_files:
        ctx.note(
            f"removed {len(report.removed_part_files)} temp file(s) left by an interrupted download"
        )
    if args.json:
        ctx.print(json.dumps(report.as_json(), indent=2))
        return
    moved = report.uploaded if plan.direction == "upload" else report.downloaded
    ctx.print(
        f"{plan.direction}ed {len(moved)} ({_human(report.bytes)}), "
        f"deleted {len(report.deleted)}, unchanged {report.unchanged}"
        + (f", failed {len(report.failed)}" if report.failed else "")
    )
