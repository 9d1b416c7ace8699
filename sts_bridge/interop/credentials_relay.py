"""Serve a workspace's credentials from a helper process the parent keeps fed.

GDAL refreshes S3 credentials from the AWS container-credentials endpoint,
and it calls that endpoint while holding the GIL (``rasterio.open`` does not
release it). An endpoint served from a thread of the same Python process
therefore deadlocks: its thread can never run while GDAL waits for it. The
endpoint runs in a helper process instead, and answers from its own memory.

The helper never holds the user's login. The parent's pusher thread sends it
frozen STS snapshots over a pipe (one JSON document per line) whenever the
workspace's refreshing credentials change, so the helper knows only what
GDAL gets anyway: the current workspace credentials. When the pipe closes
(the context ends, or the parent dies, even by SIGKILL) the helper exits.

Protocol on the helper's stdin, one JSON object per line: the first is
``{"auth_token": ..., "credentials": <document>}``; every later one is a
credentials document. The helper answers once on stdout with
``{"url": ...}`` when it listens.

Limit: the pusher is a Python thread, so it cannot run while GDAL holds the
GIL. Snapshots are pushed as soon as the workspace refreshes them (the
advisory window: 120 s before expiry for 15-minute credentials), so only a
single GDAL call holding the GIL for longer than that can see credentials
expire under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from sts_bridge.clock import utc_now
from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.errors import CredentialsError, StsBridgeError
from sts_bridge.interop.tool_credentials import container_credentials_document

__all__ = ["CredentialsRelay", "main", "serve_relay"]

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 30.0
# How often the pusher looks at the credentials, as a share of what is left
# of the current snapshot, bounded on both sides.
_POLL_SHARE = 0.1
_POLL_MIN = 0.1
_POLL_MAX = 10.0


class CredentialsRelay:
    """A helper process serving ``credentials()`` on a loopback container-credentials URL.

    ``credentials`` is a zero-argument callable returning a valid
    :class:`~sts_bridge.credentials.refreshing.S3Credentials` snapshot (e.g.
    ``workspace.credentials``). Use as a context manager; :attr:`url` and
    :attr:`auth_token` are what a client needs. Not reusable once stopped.
    """

    def __init__(self, credentials: Callable[[], S3Credentials]) -> None:
        self._credentials = credentials
        self._process: subprocess.Popen[str] | None = None
        self._pusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._last: S3Credentials | None = None
        self.pushes = 0
        self.url = ""
        self.auth_token = ""

    @property
    def pid(self) -> int | None:
        """The helper process id while it runs (for tests and diagnostics)."""
        return None if self._process is None else self._process.pid

    def start(self) -> CredentialsRelay:
        """Start the helper and the pusher.

        Raises :class:`~sts_bridge.errors.CredentialsError` when the helper
        does not come up, or the error of ``credentials()`` itself.
        """
        import secrets

        first = self._credentials()
        self.auth_token = secrets.token_urlsafe(32)
        process = subprocess.Popen(
            [sys.executable, "-m", "sts_bridge.interop.credentials_relay"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            # its own session: a Ctrl-C in the terminal reaches the parent,
            # which then closes the pipe; the helper never sees the signal
            start_new_session=True,
        )
        self._process = process
        try:
            self._write({"auth_token": self.auth_token, "credentials": _document(first)})
            self._last = first
            self.url = _read_url(process, STARTUP_TIMEOUT)
        except BaseException:
            self._end_process()
            raise
        self._pusher = threading.Thread(
            target=self._push_loop, name="sts-bridge-credentials-relay", daemon=True
        )
        self._pusher.start()
        return self

    def stop(self) -> None:
        """Stop the pusher, close the pipe and wait for the helper to exit."""
        self._stop.set()
        if self._pusher is not None:
            self._pusher.join(timeout=5)
        self._end_process()

    def __enter__(self) -> CredentialsRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CredentialsRelay(url={self.url!r}, pid={self.pid})"

    def _write(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise CredentialsError("the credentials helper process is not running")
        with self._write_lock:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()

    def _push_loop(self) -> None:
        while not self._stop.wait(self._poll_interval()):
            try:
                creds = self._credentials()
            except StsBridgeError as exc:
                # The helper keeps serving the last snapshot while it is
                # valid; the next poll tries again.
                log.warning("could not refresh workspace credentials: %s", exc.message)
                continue
            if creds is self._last:
                continue
            try:
                self._write(_document(creds))
            except (OSError, ValueError, CredentialsError):
                log.warning("the credentials helper process is gone; no more refreshes")
                return
            self._last = creds
            self.pushes += 1

    def _poll_interval(self) -> float:
        last = self._last
        if last is None or last.expiry is None:
            return _POLL_MAX
        left = (last.expiry - utc_now()).total_seconds()
        return min(_POLL_MAX, max(_POLL_MIN, left * _POLL_SHARE))

    def _end_process(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        self._process = None


def _document(creds: S3Credentials) -> dict[str, Any]:
    return container_credentials_document(creds)


def _read_url(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    try:
        url = json.loads(line)["url"] if line else ""
    except (ValueError, KeyError, TypeError):
        url = ""
    if not isinstance(url, str) or not url:
        raise CredentialsError(
            "the credentials helper process did not start",
            hint="run with --debug and check that sts-bridge is installed for " + sys.executable,
        )
    return url


# -- the helper process --------------------------------------------------------


def serve_relay(stdin: TextIO, stdout: TextIO) -> int:
    """The helper side: serve what arrives on ``stdin`` until it closes; the exit status."""
    from sts_bridge.interop.container_credentials import CredentialsEndpoint

    first = json.loads(stdin.readline() or "null")
    if not isinstance(first, dict) or "auth_token" not in first:
        return 2
    latest: dict[str, Any] = dict(first["credentials"])
    lock = threading.Lock()

    def current() -> dict[str, Any]:
        with lock:
            return latest

    endpoint = CredentialsEndpoint(current, auth_token=str(first["auth_token"])).start()
    try:
        stdout.write(json.dumps({"url": endpoint.url}) + "\n")
        stdout.flush()
        for line in stdin:
            document = json.loads(line)
            if isinstance(document, dict):
                with lock:
                    latest = document
    finally:
        endpoint.stop()
    return 0


def main() -> int:
    """Entry point of the helper process (``python -m sts_bridge.interop.credentials_relay``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing but the URL line goes to stdout; never a secret to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return serve_relay(sys.stdin, sys.stdout)
    except (ValueError, OSError) as exc:
        print(f"sts-bridge credentials helper: {type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
