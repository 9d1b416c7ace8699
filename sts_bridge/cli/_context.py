"""What one command runs with: where it writes, what it may ask, where its workspaces come from.

A command handler is ``handler(args, ctx) -> exit status``: it writes
results to ``ctx.out`` and talk to ``ctx.err``, asks questions and draws
progress only when ``ctx.interactive``, and opens workspaces through
``ctx.workspace(name)``. ``sts-bridge COMMAND`` gives it this process's
streams (:meth:`CommandContext.of_process`); ``sts-bridge run`` gives each
line its own buffers, one shared set of workspaces and a cancellation event.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TextIO

from sts_bridge.cli._text import printable

if TYPE_CHECKING:
    from sts_bridge.workspace import Workspace

__all__ = ["Cancelled", "CommandContext"]

WorkspaceOpener = Callable[["str | None"], "Workspace"]


class Cancelled(BaseException):
    """Raised from a progress callback once ``sts-bridge run`` is interrupted.

    A ``BaseException`` that is not a ``KeyboardInterrupt``: the transfer
    engine treats it as a failure, not as an interruption to resume later,
    so a multipart upload in flight is aborted and a download's temp file
    removed, and the sync engine stops instead of going on with other files.
    """


def _discard() -> TextIO:
    import os

    return open(os.devnull, "w")


@dataclass(frozen=True)
class CommandContext:
    """The streams and services of one command (see the module docstring)."""

    out: TextIO
    err: TextIO
    open_workspace: WorkspaceOpener
    quiet: bool = False
    #: May ask on the terminal and draw progress (never inside ``sts-bridge run``).
    interactive: bool = True
    #: Binary stdin / stdout for ``upload -`` and ``download KEY -`` (``None``: unavailable).
    stdin: IO[bytes] | None = None
    stdout: IO[bytes] | None = None
    #: Set when the command must stop (``sts-bridge run`` interrupted).
    cancel: threading.Event | None = None

    @classmethod
    def of_process(cls, *, quiet: bool = False) -> CommandContext:
        """This process's streams; every workspace opened afresh (one command)."""
        from sts_bridge.cli._workspace import open_workspace

        return cls(
            # None: the process started with that descriptor closed (`>&-`);
            # what would go there is dropped, as print() drops it
            out=sys.stdout if sys.stdout is not None else _discard(),
            err=sys.stderr if sys.stderr is not None else _discard(),
            open_workspace=open_workspace,
            quiet=quiet,
            # a test's or a program's text stream may have no binary buffer
            stdin=getattr(sys.stdin, "buffer", None),
            stdout=getattr(sys.stdout, "buffer", None),
        )

    def workspace(self, name: str | None) -> Workspace:
        return self.open_workspace(name)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def error(self, message: str, hint: str | None = None) -> None:
        """One ``sts-bridge: error: ...`` line (and a hint), redacted, controls escaped."""
        from sts_bridge._redact import redact

        self.err.write(f"sts-bridge: error: {printable(redact(message), backslash=False)}\n")
        if hint:
            self.err.write(f"sts-bridge: hint: {printable(redact(hint), backslash=False)}\n")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.write(f"sts-bridge: note: {text}\n")

    @property
    def shows_progress(self) -> bool:
        return self.interactive and not self.quiet and self.err.isatty()

    @property
    def can_ask(self) -> bool:
        return self.interactive and sys.stdin.isatty()

    def watched(
        self, progress: Callable[[int, int | None], None] | None
    ) -> Callable[[int, int | None], None] | None:
        """A byte-progress callback that raises :class:`Cancelled` once ``cancel`` is set.

        The transfer engines call it as parts and ranges complete: the
        cancellation lands there and unwinds the transfer as a failure
        (nothing left behind). A transfer that moved its last byte may finish.
        """
        cancel = self.cancel
        if cancel is None:
            return progress

        def check(done: int, total: int | None) -> None:
            if cancel.is_set() and done != total:
                raise Cancelled
            if progress is not None:
                progress(done, total)

        return check

    def watched_status(
        self, progress: Callable[[Any], None] | None
    ) -> Callable[[Any], None] | None:
        """Like :meth:`watched`, for a callback of whole statuses (``sync``)."""
        cancel = self.cancel
        if cancel is None:
            return progress

        def check(status: Any) -> None:
            if cancel.is_set():
                raise Cancelled
            if progress is not None:
                progress(status)

        return check
