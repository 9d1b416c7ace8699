"""``sts-bridge presign | upload | download | ls | uploads | rm``: data in a workspace.

stdout carries results (URLs, keys, paths, listings; ``--json`` for
scripts); stderr carries talk (progress on a TTY only, notes). boto3 is
imported inside the commands, never at parser build time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from sts_bridge.cli._app import ExitStatus, add_workspace_argument, glob_pattern

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext


def register(sub: Any) -> None:
    p = sub.add_parser(
        "presign",
        help="print presigned URLs for objects (one per line)",
        description="Presigned URLs, one per line on stdout. A URL cannot outlive the "
        "temporary credentials that sign it: a shorter real lifetime is noted on stderr.",
    )
    p.add_argument("keys", nargs="+", metavar="KEY", help="object key(s) in the workspace")
    add_workspace_argument(p)
    p.add_argument(
        "--expires-in",
        default="1h",
        metavar="DURATION",
        help="lifetime, e.g. 900, 15m, 1h, 7d (default 1h; at most 7d)",
    )
    p.add_argument(
        "--method",
        default="GET",
        type=str.upper,
        choices=["GET", "PUT", "HEAD", "DELETE"],
        help="HTTP method the URL allows (default GET)",
    )
    p.add_argument("--json", action="store_true", help="JSON list with key, url, expires_at")
    p.set_defaults(handler=run_presign, check=check_presign)

    p = sub.add_parser("upload", help="upload files or directories into the workspace")
    p.add_argument("paths", nargs="+", metavar="PATH", help="file(s) or directory(ies); - = stdin")
    p.add_argument(
        "--to",
        metavar="KEY",
        help="destination key (one file) or folder (ends with '/', directories, several paths)",
    )
    add_workspace_argument(p)
    p.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        type=glob_pattern,
        help="only matching files (named files too, by name)",
    )
    p.add_argument(
        "--exclude", action="append", metavar="GLOB", type=glob_pattern, help="skip matching files"
    )
    p.add_argument("--content-type", help="Content-Type (default: guessed from the name)")
    p.add_argument("--json", action="store_true", help="JSON list of the uploaded objects")
    p.set_defaults(handler=run_upload, check=check_upload)

    p = sub.add_parser("download", help="download an object")
    p.add_argument("key", metavar="KEY")
    p.add_argument(
        "dest",
        nargs="?",
        metavar="DEST",
        help="file or directory (default: here); - = stdout; a FIFO or device is streamed into",
    )
    add_workspace_argument(p)
    p.set_defaults(handler=run_download, check=check_download)

    p = sub.add_parser("ls", help="list objects")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    add_workspace_argument(p)
    p.add_argument("-r", "--recursive", action="store_true", help="list every level")
    p.add_argument("--json", action="store_true", help="JSON lines, one object per line")
    p.set_defaults(handler=run_ls, check=check_ls)

    p = sub.add_parser(
        "uploads",
        help="list (or --abort) multipart uploads left behind by killed uploads",
        description="Multipart uploads this machine started and did not finish (the "
        "process was killed): their parts take space in the store until they are aborted. "
        "Every multipart upload is recorded in the cache directory before its first part, "
        "so they are found without listing the bucket. An interrupted file upload also "
        "resumes when the same upload runs again.",
    )
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="only keys under it")
    add_workspace_argument(p)
    p.add_argument(
        "--abort", action="store_true", help="abort them (their stored parts are deleted)"
    )
    p.add_argument("--json", action="store_true", help="JSON list of the uploads")
    p.set_defaults(handler=run_uploads)

    p = sub.add_parser("rm", help="delete an object, or a folder with --recursive")
    p.add_argument("key", metavar="KEY|PREFIX")
    add_workspace_argument(p)
    p.add_argument("-r", "--recursive", action="store_true", help="delete everything under it")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=run_rm, check=check_rm)


def check_keys(*keys: str | None, folders: bool = False) -> None:
    """Refuse unsafe keys (:class:`~sts_bridge.errors.InvalidKeyError`) before any request."""
    from sts_bridge.s3.keys import check_relative_key

    for key in keys:
        if key:  # empty / None: the workspace root or a default
            check_relative_key(key, allow_trailing_slash=folders)


# The checks each command makes before any request, also run by `sts-bridge run`
# on every line before the first one starts (``check`` in the parser defaults).
def check_presign(args: argparse.Namespace, ctx: CommandContext) -> None:
    presign_seconds(args.expires_in)
    check_keys(*args.keys)


def check_upload(args: argparse.Namespace, ctx: CommandContext) -> None:
    from sts_bridge.errors import InvalidArgumentError

    if args.paths.count("-") > 1:
        raise InvalidArgumentError("stdin ('-') can be uploaded once", hint="name '-' once")
    if "-" in args.paths and ctx.stdin is None:  # started with `<&-`, or in `run`
        raise InvalidArgumentError(
            "cannot upload '-': standard input is closed (or taken: `sts-bridge run`)",
            hint="pipe the data in (`cmd | sts-bridge upload - --to KEY`) or name a file",
        )
    check_keys(args.to, folders=True)


def check_download(args: argparse.Namespace, ctx: CommandContext) -> None:
    if args.dest == "-" and ctx.stdout is None:  # started with `>&-`, or in `run`
        from sts_bridge.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "cannot download to '-': standard output is closed (or taken: `sts-bridge run`)",
            hint="redirect it (`> file`) or name a destination file",
        )
    check_keys(args.key)


def check_ls(args: argparse.Namespace, ctx: CommandContext) -> None:
    check_keys(args.prefix, folders=True)


def check_rm(args: argparse.Namespace, ctx: CommandContext) -> None:
    check_keys(None if args.key in ("", "/") else args.key, folders=args.recursive)
    if args.recursive and not args.yes and not ctx.can_ask:
        from sts_bridge.errors import InvalidArgumentError

        folder = args.key if args.key in ("", "/") else args.key.rstrip("/") + "/"
        raise InvalidArgumentError(
            f"refusing to delete everything under {folder or 'the workspace root'!r} "
            "without confirmation",
            hint="add --yes to delete without asking",
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------- presign
@functools.lru_cache(maxsize=64)  # `sts-bridge run`: a thousand lines, one duration
def presign_seconds(expires_in: str) -> int:
    """The lifetime ``--expires-in`` asks for (raises InvalidArgumentError: exit 2)."""
    from sts_bridge.errors import InvalidArgumentError
    from sts_bridge.s3.signer import MAX_EXPIRES
    from sts_bridge.s3.transfers import parse_duration

    hint = "give a duration between 1s and 7d, e.g. 900, 15m, 1h, 7d"
    try:
        seconds = parse_duration(expires_in)
    except ValueError as exc:
        raise InvalidArgumentError(f"--expires-in: {exc}", hint=hint) from None
    if not 1 <= seconds <= MAX_EXPIRES:
        raise InvalidArgumentError(
            f"--expires-in {expires_in!r} is {seconds} s, outside 1 s .. 7 days", hint=hint
        )
    return seconds


def run_presign(args: argparse.Namespace, ctx: CommandContext) -> int:
    (text,) = presign_texts([args], ctx)
    ctx.out.write(text)
    return 0


def presign_texts(commands: list[argparse.Namespace], ctx: CommandContext) -> list[str]:
    """What each of ``commands`` (presigns of one workspace, method, lifetime and
    output form) prints on stdout, all signed in one pass.

    ``sts-bridge run`` hands consecutive presign lines over together: signing
    a hundred keys in one call costs a quarter of a hundred one-key calls.
    """
    first = commands[0]
    shared = (first.workspace, first.method, first.expires_in, first.json)
    for args in commands:
        if (args.workspace, args.method, args.expires_in, args.json) != shared:
            raise ValueError("presigns signed together share workspace, method, lifetime, --json")
        check_presign(args, ctx)
    seconds = presign_seconds(first.expires_in)
    ws = ctx.workspace(first.workspace)
    # a clamped lifetime is a note of this command (a callback, not a warning:
    # presigns of `sts-bridge run` run at once in threads)
    urls = ws.presign_many(
        [key for args in commands for key in args.keys],
        first.method,
        seconds,
        on_clamp=ctx.note,
    )
    texts = []
    start = 0
    for args in commands:
        mine = urls[start : start + len(args.keys)]
        start += len(mine)
        if first.json:
            doc = [
                {
                    "key": u.key,
                    "method": u.method,
                    "url": u.url,
                    "expires_at": u.expires_at.isoformat(),
                }
                for u in mine
            ]
            texts.append(json.dumps(doc, indent=2) + "\n")
        else:
            texts.append("".join(u.url + "\n" for u in mine))
    return texts


# ---------------------------------------------------------------- upload
class _Bar:
    """A one-line progress bar on stderr (only used on a TTY)."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.start = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < 0.1 and done != total:
                return
            self.last = now
        rate = done / max(now - self.start, 1e-6)
        if total:
            text = f"{done * 100 // total:3d}% {_human(done)} / {_human(total)}"
        else:
            text = _human(done)
        self.err.write(f"\r{text}  {_human(rate)}/s   ")
        self.err.flush()

    def close(self) -> None:
        self.err.write("\n")


def run_upload(args: argparse.Namespace, ctx: CommandContext) -> int:
    """Plan every path first (keys, patterns, two paths onto one key, what is skipped),
    then upload: nothing is sent for a plan that cannot be carried out whole."""
    from sts_bridge.errors import InvalidArgumentError, StsBridgeError

    check_upload(args, ctx)
    for path in args.paths:
        if path != "-" and not os.path.exists(path) and not os.path.islink(path):
            raise InvalidArgumentError(
                f"no such file or directory: {path}", hint="check the path to upload"
            )
    if len(args.paths) == 1:
        _hash_ahead(args.paths[0])
    ws = ctx.workspace(args.workspace)
    several = len(args.paths) > 1
    skipped: list[tuple[str, str]] = []
    sources: list[tuple[Any, str | None]] = []
    for path in args.paths:
        key = args.to
        if several and key and not key.endswith("/"):
            key += "/"
        if path != "-" and os.path.isdir(path):
            # upload_directory's default key: the folder's own name
            sources.append((path, key))
            continue
        sources.append((ctx.stdin if path == "-" else path, key))

    def skip(where: str, reason: str) -> None:
        skipped.append((where, reason))

    bar = _Bar(ctx.err) if ctx.shows_progress else None
    results: list[Any] = []
    try:
        results = ws.upload_many(
            sources,
            include=args.include,
            exclude=args.exclude,
            content_type=args.content_type,
            progress=ctx.watched(bar),
            on_skip=skip,
        )
    finally:
        if bar is not None:
            bar.close()
        if results or len(skipped) > 1:  # one skip and nothing else: the error says it
            for where, reason in skipped:
                ctx.err.write(f"sts-bridge: warning: skipped {where!r}: {reason}\n")
    for path in args.paths:
        if path != "-" and os.path.isdir(path) and not _holds_entries(path):
            ctx.note(f"{path} holds no file: nothing uploaded from it")
    if not results and skipped:
        raise InvalidArgumentError(
            f"nothing to upload: {len(skipped)} path(s) skipped, e.g. "
            f"{skipped[0][0]!r}: {skipped[0][1]}",
            hint="check the paths and the --include/--exclude patterns",
        )
    if args.json:
        doc = [
            {
                "key": r.key,
                "size": r.size,
                "etag": r.etag,
                "checksum": r.checksum,
                "uri": r.uri,
            }
            for r in results
        ]
        ctx.print(json.dumps(doc, indent=2))
    else:
        for r in results:
            ctx.print(r.uri)
    if skipped:
        raise StsBridgeError(  # exit 1
            f"{len(skipped)} path(s) skipped, e.g. {skipped[0][0]!r}: {skipped[0][1]}; "
            f"the other {len(results)} file(s) were uploaded",
            hint="remove or rename them, or leave them out with --exclude",
        )
    return 0


def _holds_entries(folder: str) -> bool:
    """Whether anything but folders is under ``folder`` (stops at the first)."""
    return next((True for _, _, names in os.walk(folder) if names), False)


def _hash_ahead(path: str) -> None:
    """Start the SHA-256 pass of a file that will upload multipart (see
    :mod:`sts_bridge.s3.digests`): it runs while the engine is loaded."""
    import stat

    from sts_bridge.s3.config import TransferConfig
    from sts_bridge.s3.digests import choose_part_size, start_digests

    try:
        st = os.stat(path)
    except OSError:
        return
    config = TransferConfig()
    if stat.S_ISREG(st.st_mode) and st.st_size >= config.multipart_threshold:
        start_digests(path, choose_part_size(st.st_size, config.part_size))


# ---------------------------------------------------------------- download
def run_download(args: argparse.Namespace, ctx: CommandContext) -> int:
    check_download(args, ctx)
    ws = ctx.workspace(args.workspace)
    bar = _Bar(ctx.err) if ctx.shows_progress else None
    progress = ctx.watched(bar)
    try:
        if args.dest == "-":
            assert ctx.stdout is not None
            ctx.out.flush()
            ws.download_fileobj(args.key, ctx.stdout, progress=progress)
            ctx.stdout.flush()
            return 0
        path = ws.download(args.key, args.dest, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if _is_regular_file(path):  # not when the data itself went to stdout or a device
        ctx.print(str(path))
    return 0


def _is_regular_file(path: Any) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------- ls
def run_ls(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.cli._text import printable

    check_ls(args, ctx)
    ws = ctx.workspace(args.workspace)
    for info in ws.list(args.prefix, recursive=args.recursive):
        if args.json:
            ctx.print(
                json.dumps(
                    {
                        "key": info.key,
                        "size": info.size,
                        "etag": info.etag,
                        "last_modified": info.last_modified.isoformat()
                        if info.last_modified
                        else None,
                        "is_prefix": info.is_prefix,
                    }
                )
            )
        elif info.is_prefix:
            ctx.print(f"{'PRE':>12}  {'':19}  {printable(info.key)}")
        else:
            when = info.last_modified.strftime("%Y-%m-%d %H:%M:%S") if info.last_modified else ""
            ctx.print(f"{info.size:>12}  {when:19}  {printable(info.key)}")
    return 0


# ---------------------------------------------------------------- uploads
def run_uploads(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.cli._text import printable
    from sts_bridge.errors import StsBridgeError

    check_keys(args.prefix, folders=True)
    ws = ctx.workspace(args.workspace)
    uploads = ws.unfinished_uploads(args.prefix)
    failed = 0
    aborted: list[Any] = []
    if args.abort:
        for u in uploads:
            if u.running:
                ctx.note(f"{printable(u.key)}: still running in another process, left alone")
                continue
            try:
                ws.abort_upload(u)
            except StsBridgeError as exc:
                ctx.error(f"{printable(u.key)}: {exc.message}", exc.hint)
                failed += 1
                continue
            aborted.append(u)
    if args.json:
        doc = [
            {
                "key": u.key,
                "upload_id": u.upload_id,
                "started": u.started.isoformat() if u.started else None,
                "parts": u.parts,
                "size": u.size,
                "source": u.source,
                "running": u.running,
                "aborted": u in aborted,
            }
            for u in uploads
        ]
        ctx.print(json.dumps(doc, indent=2))
    elif args.abort:
        for u in aborted:
            ctx.print(f"aborted {printable(u.key)} ({u.parts} part(s), {_human(u.size)})")
    else:
        for u in uploads:
            when = u.started.strftime("%Y-%m-%d %H:%M:%S") if u.started else ""
            state = "running" if u.running else "left"
            ctx.print(
                f"{when:19}  {state:7}  {u.parts:>5}  {_human(u.size):>10}  {printable(u.key)}"
            )
    if not uploads:
        ctx.note("no unfinished multipart upload recorded on this machine")
    elif not args.abort and any(not u.running for u in uploads):
        ctx.note(
            "abort them with `sts-bridge uploads --abort`; a file upload also "
            "resumes when the same upload runs again"
        )
    return ExitStatus.STORAGE if failed else 0


# ---------------------------------------------------------------- rm
def run_rm(args: argparse.Namespace, ctx: CommandContext) -> int:
    check_rm(args, ctx)
    ws = ctx.workspace(args.workspace)
    if not args.recursive:
        ws.delete(args.key)
        ctx.print(f"deleted {args.key}")
        return 0
    folder = args.key if args.key in ("", "/") else args.key.rstrip("/") + "/"
    if not args.yes:  # check_rm made sure there is a terminal to ask on
        count = sum(1 for _ in ws.list("" if folder == "/" else folder))
        answer = input(f"delete {count} object(s) under {folder or '/'!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            ctx.note("nothing deleted")
            return ExitStatus.ERROR
    deleted = ws.delete(args.key, recursive=True)
    ctx.print(f"deleted {deleted} object(s) under {folder or '/'}")
    return 0
